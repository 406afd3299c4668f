/*
 * extension/common/redact.c
 *
 * Keeps plaintext typed into SQL out of the server log.  A statement such
 * as "SELECT keysmith.encrypt_value('k', '4111-...')" reaches the log on
 * many channels: log_statement, log_min_duration_statement and
 * log_min_error_statement (the message and the STATEMENT: line), bind
 * parameters (a DETAIL or CONTEXT line), the CONTEXT and QUERY lines of a
 * failing DO block or function, pgaudit's AUDIT records (with their own CSV
 * quoting and parameter list) and auto_explain's plans (the query text, and
 * the constants again in Filter: and Output: lines).
 *
 * So redaction is decided once per statement and then applied to every
 * field of every record that statement produces:
 *
 *   - A statement text is sensitive when it names a keysmith function that
 *     takes or returns a secret (SecretNames below), or EXECUTEs a prepared
 *     statement that does.  The top-level statement (debug_query_string) is
 *     decided when the first hook of that statement runs; nested statements
 *     (PL/pgSQL, SQL functions, a prepared statement's body) are decided
 *     when the executor starts them.  The sensitive texts of the current
 *     top-level statement are kept, each with its redacted form, until the
 *     next top-level statement begins.
 *   - In a sensitive text every string and numeric constant becomes '***' /
 *     ***; identifiers, keywords and the shape stay (KsRedactStatement).
 *     Where the scan cannot tell where a string ends (a plain string whose
 *     end depends on standard_conforming_strings, which may have changed
 *     since the text was parsed; an unterminated quote), the rest of the
 *     text is one constant.
 *   - emit_log_hook rewrites each record: every copy of a known sensitive
 *     text is replaced by its redacted form, in the message, detail, hint,
 *     context and internal query; a field that still names a secret
 *     function (a plan, a context line of a text never seen whole) has its
 *     quoted constants replaced; a sensitive statement's bind parameters are
 *     replaced; in an error of such a statement (not keysmith's own), any
 *     value that is one of its constants or part of one, quoted back ("date/
 *     time field value out of range: "..."", a JSON token or line), becomes
 *     ***; pgaudit's records are parsed as the CSV they are and only
 *     their statement and parameter fields are touched; the STATEMENT: line
 *     is printed from a redacted copy of debug_query_string.
 *
 * Nothing outside a sensitive statement's records is changed, and in those
 * only constants are: another extension's ids, durations and plan shapes
 * stay.  keysmith.redact_statements (on by default, superuser-only) turns it
 * all off.  What cannot be covered (a user's own wrapper function,
 * pg_stat_statements, values that errors quote from decrypted data) is in
 * docs/security.md, with what to do instead.
 *
 * The emit_log_hook runs inside error reporting: it must not throw.  It only
 * scans and copies strings, in ErrorContext, which is reserved for this; the
 * per-statement state lives in a context of its own, reset when a new
 * top-level statement begins.
 */
#include "postgres.h"

#include <dlfcn.h>

#include "access/xact.h"
#include "commands/prepare.h"
#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/plancache.h"

#include "extension/common/guc.h"
#include "extension/hooks.h"


static emit_log_hook_type prev_emit_log_hook = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;

/*
 * Names whose presence makes a statement text sensitive, matched
 * case-insensitively anywhere in the text:
 * - encrypt_value, decrypt_value (and decrypt_value_bytea), rewrap_value:
 *   the plaintext, the context, and a plaintext compared with a decrypted
 *   value ("WHERE decrypt_value(ssn) = '...'");
 * - create_secret, put_secret_value: a secret's value; get_secret (and
 *   get_secret_version): a value compared with a secret;
 * - _kms_provider (create_ and alter_kms_provider): options are refused
 *   when they hold a secret, but the text would still log it;
 * - pending_verifier: the rotation worker's own statement that carries a
 *   rotation's SCRAM verifier as a parameter.
 * Each contains an underscore, which is what the scan looks for first.
 */
static const char *const SecretNames[] = {
	"encrypt_value",
	"decrypt_value",
	"rewrap_value",
	"create_secret",
	"put_secret_value",
	"get_secret",
	"_kms_provider",
	"pending_verifier",
};

#define MAX_NESTED_TEXTS 16
#define MAX_NUMBERS 64
#define MIN_NUMBER_DIGITS 4
#define MAX_BODY_DEPTH 4		/* DO bodies within bodies kept in shape */
#define MAX_CONSTANTS 256
#define MAX_CONSTANT_BYTES (64 * 1024)
#define MIN_ECHO_CHARS 4		/* an unquoted echo of a constant, at least */
#define MAX_MATCH_WORK (16 * 1024 * 1024)	/* field bytes x constant bytes */

typedef struct KnownText
{
	char	   *text;			/* a sensitive statement text */
	char	   *redacted;		/* the same with its constants replaced */
} KnownText;

/*
 * What has been decided for the current top-level statement.  It is the
 * same statement while the statement start timestamp and debug_query_string
 * (or our redacted copy of it) are unchanged.
 */
typedef struct RedactState
{
	bool		valid;
	TimestampTz started;
	const char *top_ptr;		/* debug_query_string as postgres.c set it */
	bool		top_sensitive;
	KnownText	top;			/* valid if top_sensitive */
	int			nnested;
	KnownText	nested[MAX_NESTED_TEXTS];	/* sensitive nested texts */

	/*
	 * The numeric constants of those texts (of MIN_NUMBER_DIGITS or more
	 * characters): a plan prints "Filter: (... = 4111111111111111)" without
	 * quotes, so these are looked for as whole tokens.
	 */
	int			nnumbers;
	char	   *numbers[MAX_NUMBERS];

	/*
	 * The string and numeric constants of those texts, as the server would
	 * read them ('' and backslash escapes undone), so that an error that
	 * quotes one ("1937-02-30" of a date that does not exist, a JSON
	 * token) can be redacted.  Beyond the bounds, constants_overflow says
	 * so, and every quoted value of the statement's records is replaced.
	 */
	int			nconstants;
	size_t		constant_bytes;
	bool		constants_overflow;
	char	   *constants[MAX_CONSTANTS];
} RedactState;

static RedactState State;
static MemoryContext RedactCxt = NULL;

/*
 * The redacted copy debug_query_string points to, if any, in
 * TopMemoryContext: it must live as long as debug_query_string may point to
 * it, which is until postgres.c resets it (the next one frees it).
 */
static char *StatementCopy = NULL;

static inline bool
IsIdentChar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		c == '_' || c == '$' || (unsigned char) c >= 0x80;
}

/*
 * Does text name one of SecretNames?  This runs on every log record and
 * every executor start, so it looks only at underscores (a memchr-speed
 * scan) and compares names around each one.
 */
static bool
MentionsSecretName(const char *text)
{
	const char *p;

	if (text == NULL)
		return false;
	for (p = strchr(text, '_'); p != NULL; p = strchr(p + 1, '_'))
	{
		for (int i = 0; i < (int) lengthof(SecretNames); i++)
		{
			const char *name = SecretNames[i];
			size_t		off = strchr(name, '_') - name;

			if (p - text >= (ptrdiff_t) off &&
				pg_strncasecmp(p - off, name, strlen(name)) == 0)
				return true;
		}
	}
	return false;
}

/*
 * The prepared statement that text EXECUTEs, if it EXECUTEs one whose
 * text names a secret function ("EXECUTE ins('4111...')" carries the
 * plaintext, but only the PREPARE named encrypt_value).  Only a lookup in
 * this backend's own table: no allocation, no error.
 */
static const char *
SensitivePreparedText(const char *text)
{
	for (const char *p = text; *p; p++)
	{
		char		name[NAMEDATALEN];
		int			n = 0;
		const char *q;
		PreparedStatement *ps;

		if ((*p != 'e' && *p != 'E') || pg_strncasecmp(p, "execute", 7) != 0 ||
			(p > text && IsIdentChar(p[-1])) || IsIdentChar(p[7]))
			continue;
		for (q = p + 7; *q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'; q++)
			;
		if (*q == '"')
		{
			for (q++; *q && n < NAMEDATALEN - 1; q++)
			{
				if (*q == '"' && q[1] != '"')
					break;
				if (*q == '"')
					q++;
				name[n++] = *q;
			}
		}
		else
		{
			for (; IsIdentChar(*q) && *q != '$' && n < NAMEDATALEN - 1; q++)
				name[n++] = (*q >= 'A' && *q <= 'Z') ? *q + ('a' - 'A') : *q;
		}
		name[n] = '\0';
		if (n == 0)
			continue;
		ps = FetchPreparedStatement(name, false);
		if (ps != NULL && ps->plansource != NULL &&
			MentionsSecretName(ps->plansource->query_string))
			return ps->plansource->query_string;
	}
	return NULL;
}

/*
 * Length of a dollar-quote tag starting at p ("$$" or "$tag$"), or 0 if p
 * does not start one.
 */
static size_t
DollarTag(const char *p)
{
	const char *q = p + 1;

	if (*p != '$')
		return 0;
	if (*q >= '0' && *q <= '9')
		return 0;				/* $1: a parameter */
	while (*q && *q != '$' && IsIdentChar(*q))
		q++;
	return *q == '$' ? (size_t) (q - p + 1) : 0;
}

/* Is the token [p, p + len) one of st's numbers? */
static bool
IsKnownNumber(RedactState *st, const char *p, size_t len)
{
	for (int i = 0; i < st->nnumbers; i++)
		if (strlen(st->numbers[i]) == len && strncmp(st->numbers[i], p, len) == 0)
			return true;
	return false;
}

/*
 * How a string constant starting with the quote at p is read.  E'...'
 * always takes backslash escapes, U&'...', B'...' and X'...' never do;
 * a plain (or N'...') string takes them only when
 * standard_conforming_strings is off.
 */
typedef enum QuoteKind
{
	QUOTE_ESCAPE,
	QUOTE_STANDARD,
	QUOTE_PLAIN
} QuoteKind;

static QuoteKind
QuoteKindAt(const char *text, const char *p)
{
	if (p > text && (p[-1] == 'E' || p[-1] == 'e') &&
		(p - 1 == text || !IsIdentChar(p[-2])))
		return QUOTE_ESCAPE;
	if (p > text && strchr("bBxX", p[-1]) != NULL &&
		(p - 1 == text || !IsIdentChar(p[-2])))
		return QUOTE_STANDARD;
	if (p - 1 > text && p[-1] == '&' && (p[-2] == 'U' || p[-2] == 'u') &&
		(p - 2 == text || !IsIdentChar(p[-3])))
		return QUOTE_STANDARD;
	return QUOTE_PLAIN;
}

/*
 * The quote that ends the string constant whose opening quote is at p, or
 * the terminating NUL if none does.  '' is a quote in any form; with
 * backslash, a backslash escapes the character after it.
 */
static const char *
QuoteEnd(const char *p, bool backslash)
{
	for (p++; *p; p++)
	{
		if (backslash && *p == '\\' && p[1])
			p++;
		else if (*p == '\'' && p[1] == '\'')
			p++;
		else if (*p == '\'')
			return p;
	}
	return p;
}

/*
 * Keep [s, s + len), a constant of a sensitive text, in st (in the current
 * context, which is RedactCxt), decoded as the server reads it: '' is one
 * quote and, with backslash, a backslash and the character after it are
 * that character (good enough to find a value quoted back by an error).
 */
static void
NoteConstant(RedactState *st, const char *s, size_t len, bool backslash)
{
	StringInfoData c;

	if (st == NULL || len == 0)
		return;
	if (st->nconstants == MAX_CONSTANTS || st->constant_bytes + len > MAX_CONSTANT_BYTES)
	{
		st->constants_overflow = true;
		return;
	}
	initStringInfo(&c);
	for (size_t i = 0; i < len; i++)
	{
		if (i + 1 < len && ((s[i] == '\'' && s[i + 1] == '\'') ||
							(backslash && s[i] == '\\')))
			i++;
		appendStringInfoChar(&c, s[i]);
	}
	st->constants[st->nconstants++] = c.data;
	st->constant_bytes += c.len;
}

/*
 * Replace constants in text, palloc'd in the current context.  With sql,
 * text is a statement: every string constant ('...', E'...',
 * $tag$...$tag$) becomes '***', every numeric constant ***, comments are
 * dropped and quoted identifiers kept; the numbers are added to st's, if
 * st is given.  Without sql, text is a log field that holds SQL fragments
 * among other things (a plan, a context line, a parameter list): quoted
 * constants are replaced, and only those numbers that are st's; double
 * quotes and other numbers are left alone, since there they are a CSV
 * quote, a plan's row count or another extension's id.
 */
static char *
RedactConstantsAt(const char *text, bool sql, RedactState *st, int depth)
{
	StringInfoData out;
	const char *p = text;

	initStringInfo(&out);
	while (*p)
	{
		size_t		tag;

		if (sql && p[0] == '-' && p[1] == '-')
		{
			while (*p && *p != '\n')
				p++;
			appendStringInfoChar(&out, ' ');
		}
		else if (sql && p[0] == '/' && p[1] == '*')
		{
			int			depth = 0;

			do
			{
				if (p[0] == '/' && p[1] == '*')
					depth++, p += 2;
				else if (p[0] == '*' && p[1] == '/')
					depth--, p += 2;
				else
					p++;
			} while (*p && depth > 0);
			appendStringInfoChar(&out, ' ');
		}
		else if (*p == '\'')
		{
			/*
			 * Whether backslash escapes a plain string's quote depends on
			 * standard_conforming_strings as it was when the text was
			 * parsed, which may not be its value now (a SET earlier in the
			 * same query string).  Where the two readings end the string
			 * at different quotes, the scan has lost track of what is
			 * quoted: the rest of the text is one constant.
			 */
			QuoteKind	kind = QuoteKindAt(text, p);
			const char *end = QuoteEnd(p, kind == QUOTE_ESCAPE);

			if (kind == QUOTE_PLAIN && QuoteEnd(p, true) != end)
				end = p + strlen(p);
			if (sql)
				NoteConstant(st, p + 1, end - (p + 1), kind == QUOTE_ESCAPE ||
							 (kind == QUOTE_PLAIN && !standard_conforming_strings));
			appendStringInfoString(&out, "'***'");
			p = *end ? end + 1 : end;
		}
		else if (sql && *p == '"')
		{
			const char *start = p++;

			while (*p && !(*p == '"' && p[1] != '"'))
				p += (*p == '"') ? 2 : 1;
			if (*p)
				appendBinaryStringInfo(&out, start, ++p - start);
			else
			{
				/* no closing quote: lost track, as above */
				NoteConstant(st, start + 1, p - (start + 1), false);
				appendStringInfoString(&out, "'***'");
			}
		}
		else if ((tag = DollarTag(p)) > 0 && (p == text || !IsIdentChar(p[-1])))
		{
			const char *end = p + tag;
			char	   *body;

			while (*end && strncmp(end, p, tag) != 0)
				end++;
			body = pnstrdup(p + tag, end - (p + tag));

			/*
			 * A DO block's or a function's body that calls a secret
			 * function keeps its shape, with its own constants replaced;
			 * any other dollar-quoted string is a constant.  The depth is
			 * bounded: each level copies the body, and this must not be a
			 * way to exhaust the stack or memory with one statement.
			 */
			if (sql && *end && depth < MAX_BODY_DEPTH && MentionsSecretName(body))
			{
				appendBinaryStringInfo(&out, p, tag);
				appendStringInfoString(&out, RedactConstantsAt(body, true, st, depth + 1));
				appendBinaryStringInfo(&out, p, tag);
			}
			else
			{
				if (sql)
					NoteConstant(st, body, strlen(body), false);
				appendStringInfoString(&out, "'***'");
			}
			pfree(body);
			p = *end ? end + tag : end;
		}
		else if ((*p >= '0' && *p <= '9') && (p == text || !IsIdentChar(p[-1])) &&
				 (sql || (st != NULL && (p == text || p[-1] != '.'))))
		{
			const char *start = p;

			while (IsIdentChar(*p) || *p == '.' ||
				   ((*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E')))
				p++;
			if (sql && st != NULL && p - start >= MIN_NUMBER_DIGITS &&
				st->nnumbers < MAX_NUMBERS && !IsKnownNumber(st, start, p - start))
				st->numbers[st->nnumbers++] = pnstrdup(start, p - start);
			if (sql && p - start >= MIN_NUMBER_DIGITS)
				NoteConstant(st, start, p - start, false);
			if (sql || IsKnownNumber(st, start, p - start))
				appendStringInfoString(&out, "***");
			else
				appendBinaryStringInfo(&out, start, p - start);
		}
		else
			appendStringInfoChar(&out, *p++);
	}
	return out.data;
}

static char *
RedactConstants(const char *text, bool sql, RedactState *st)
{
	return RedactConstantsAt(text, sql, st, 0);
}

/*
 * The statement with every string and numeric constant replaced by '***' /
 * ***, comments dropped, everything else kept.  palloc'd in the current
 * context.
 */
static char *
KsRedactStatement(const char *sql)
{
	return RedactConstants(sql, true, NULL);
}

/* A copy of text and of its redacted form, in RedactCxt; its numbers to st. */
static void
MakeKnownText(RedactState *st, KnownText *kt, const char *text)
{
	MemoryContext old = MemoryContextSwitchTo(RedactCxt);

	kt->text = pstrdup(text);
	kt->redacted = RedactConstants(text, true, st);
	MemoryContextSwitchTo(old);
}

static void
NoteNestedText(RedactState *st, const char *text)
{
	if (text == NULL || text == st->top_ptr || !MentionsSecretName(text))
		return;
	if (st->top_sensitive && strcmp(text, st->top.text) == 0)
		return;
	for (int i = 0; i < st->nnested; i++)
		if (strcmp(text, st->nested[i].text) == 0)
			return;
	/* beyond this, such records fall back to RedactConstants(, false, ) */
	if (st->nnested == MAX_NESTED_TEXTS)
		return;
	MakeKnownText(st, &st->nested[st->nnested], text);
	st->nnested++;
}

/*
 * The state of the current top-level statement, starting a new one if the
 * statement has changed since the last call.
 */
static RedactState *
CurrentState(void)
{
	const char *q = debug_query_string;
	TimestampTz started = GetCurrentStatementStartTimestamp();
	const char *prepared;

	if (State.valid && State.started == started &&
		(q == State.top_ptr || (q != NULL && q == StatementCopy)))
		return &State;

	if (RedactCxt == NULL)
		RedactCxt = AllocSetContextCreate(TopMemoryContext, "keysmith redaction",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(RedactCxt);
	memset(&State, 0, sizeof(State));
	State.started = started;
	State.top_ptr = q;
	if (q != NULL && *q)
	{
		prepared = SensitivePreparedText(q);
		State.top_sensitive = prepared != NULL || MentionsSecretName(q);
		if (State.top_sensitive)
			MakeKnownText(&State, &State.top, q);
		/* "prepare: PREPARE ..." (log_statement's DETAIL) and its plans */
		if (prepared != NULL)
			NoteNestedText(&State, prepared);
	}
	State.valid = true;
	return &State;
}

/* Every occurrence of what in text replaced by with; text if there is none. */
static char *
ReplaceAll(char *text, const char *what, const char *with)
{
	const char *at = strstr(text, what);
	const char *from = text;
	size_t		len = strlen(what);
	StringInfoData out;

	if (at == NULL || len == 0)
		return text;
	initStringInfo(&out);
	for (; at != NULL; at = strstr(from, what))
	{
		appendBinaryStringInfo(&out, from, at - from);
		appendStringInfoString(&out, with);
		from = at + len;
	}
	appendStringInfoString(&out, from);
	return out.data;
}

/* Length of the longest prefix of s (of at most len bytes) in a constant. */
static size_t
LongestConstantPrefix(RedactState *st, const char *s, size_t len)
{
	size_t		best = 0;

	for (int i = 0; i < st->nconstants; i++)
	{
		for (const char *c = strchr(st->constants[i], s[0]); c != NULL;
			 c = strchr(c + 1, s[0]))
		{
			size_t		n = 0;

			while (n < len && c[n] != '\0' && c[n] == s[n])
				n++;
			if (n > best)
				best = n;
		}
	}
	return best;
}

/* Is [s, s + len) a whole constant, or (two bytes or more) part of one? */
static bool
IsConstantPart(RedactState *st, const char *s, size_t len)
{
	for (int i = 0; i < st->nconstants; i++)
	{
		const char *c = st->constants[i];

		if (strlen(c) == len && memcmp(c, s, len) == 0)
			return true;
	}
	return len >= 2 && LongestConstantPrefix(st, s, len) == len;
}

/*
 * A field of a sensitive statement's record with the values it quotes
 * back replaced by ***: an error about a constant ("date/time field value
 * out of range: "1937-02-30"", a JSON token, a line of JSON in CONTEXT)
 * holds it, quoted or not.  Replaced are every quoted ("..." or '...')
 * value that is a constant or part of one, and every unquoted run of
 * MIN_ECHO_CHARS or more bytes that is part of one and neither starts nor
 * ends within a word (so that a function g_card() stays, with a constant
 * 'no_card'); the rest of the text stays.  When the constants are too many or too long to compare, every
 * quoted value is replaced.
 */
/* Are text[at - 1] and text[at] both within one word (identifier, number)? */
static inline bool
InWord(const char *text, size_t at)
{
	return at > 0 && IsIdentChar(text[at - 1]) && IsIdentChar(text[at]);
}

static void
MarkCopies(bool *keep, const char *field, const KnownText *kt)
{
	size_t		n = strlen(kt->redacted);

	for (const char *at = strstr(field, kt->redacted); at != NULL && n > 0;
		 at = strstr(at + n, kt->redacted))
		memset(keep + (at - field), true, n);
}

static char *
RedactEchoedValues(RedactState *st, char *field)
{
	size_t		len = strlen(field);
	bool		everything;
	bool		any = false;
	bool	   *cover;
	bool	   *keep;
	StringInfoData out;

	if (len == 0 || (st->nconstants == 0 && !st->constants_overflow))
		return field;
	everything = st->constants_overflow ||
		(double) len * (double) st->constant_bytes > MAX_MATCH_WORK;
	cover = palloc0(len);

	/* the redacted copies of sensitive texts (a CONTEXT line) stay whole */
	keep = palloc0(len + 1);
	if (st->top_sensitive)
		MarkCopies(keep, field, &st->top);
	for (int i = 0; i < st->nnested; i++)
		MarkCopies(keep, field, &st->nested[i]);

	for (size_t i = 0; i < len; i++)
	{
		const char *close;
		size_t		n;

		if ((field[i] != '"' && field[i] != '\'') || keep[i])
			continue;
		close = strchr(field + i + 1, field[i]);
		if (close == NULL)
			continue;
		n = close - (field + i + 1);
		if (memchr(keep + i + 1, true, n + 1) != NULL)
			continue;
		if (n > 0 && (everything || IsConstantPart(st, field + i + 1, n)))
		{
			memset(cover + i + 1, true, n);
			any = true;
			i += n + 1;			/* the closing quote is not an opening one */
		}
	}
	for (size_t i = 0, next = 0; !everything && i < len; i++)
	{
		size_t		n;

		if (keep[i] || cover[i] || (i > 0 && InWord(field, i)))
			continue;
		/* next: the first kept byte after i, where a match must stop */
		if (next <= i)
			for (next = i; next < len && !keep[next]; next++)
				;
		n = LongestConstantPrefix(st, field + i, next - i);
		while (n > 0 && InWord(field, i + n))
			n--;

		if (n >= MIN_ECHO_CHARS)
		{
			memset(cover + i, true, n);
			any = true;
			i += n - 1;
		}
	}
	if (!any)
		return field;
	initStringInfo(&out);
	for (size_t i = 0; i < len; i++)
	{
		if (!cover[i])
			appendStringInfoChar(&out, field[i]);
		else if (i == 0 || !cover[i - 1])
			appendStringInfoString(&out, "***");
	}
	return out.data;
}

/*
 * Was the record raised by keysmith's own code?  Its messages never hold a
 * value (docs/security.md, rule 6) and name keys and secrets, which stay.
 * The ereport's __FILE__ is a string of the library that raised it; one
 * that cannot be placed counts as another's.
 */
static bool
RaisedByKeysmith(const ErrorData *edata)
{
	Dl_info		self;
	Dl_info		origin;

	if (edata->filename == NULL ||
		dladdr((const void *) &keysmith_redact_statements, &self) == 0 ||
		dladdr(edata->filename, &origin) == 0)
		return false;
	return self.dli_fbase == origin.dli_fbase;
}

/*
 * One field of a record (message, detail, hint, context): copies of the
 * statement's sensitive texts become their redacted forms; then, if the
 * field still names a secret function (a plan's Output: and Filter: lines,
 * a context line quoting a text never seen whole) or lists a sensitive
 * statement's bind parameters, its quoted constants are replaced, and the
 * numeric constants of the statement's sensitive texts.
 */
static char *
RedactField(RedactState *st, char *field, bool echoes)
{
	bool		sensitive = st->top_sensitive || st->nnested > 0;

	if (field == NULL)
		return NULL;
	if (st->top_sensitive)
		field = ReplaceAll(field, st->top.text, st->top.redacted);
	for (int i = 0; i < st->nnested; i++)
		field = ReplaceAll(field, st->nested[i].text, st->nested[i].redacted);
	/* "$1 = '...'" is how the server lists parameters, in any language */
	if (MentionsSecretName(field) || (sensitive && strstr(field, "$1 = ") != NULL))
		field = RedactConstants(field, false, st);
	if (sensitive && echoes)
		field = RedactEchoedValues(st, field);
	return field;
}

/*
 * pgaudit's records, as pgaudit 1.7 writes them:
 *
 *   AUDIT: <type>,<statement id>,<substatement id>,<class>,<command>,
 *          <object type>,<object name>,<statement>,<parameters>[,<rows>]
 *
 * each field CSV-quoted when it holds a comma, a double quote or a line
 * break (inner double quotes doubled), and the parameters a CSV list of
 * their own, quoted again as one field.  When the statement is sensitive,
 * it is redacted as a statement and every parameter becomes ***; every
 * other field is copied byte for byte.  Returns false (and changes nothing)
 * if the message is not such a record.
 */
#define AUDIT_PREFIX "AUDIT: "
#define AUDIT_STATEMENT 7
#define AUDIT_PARAMETERS 8
#define AUDIT_MAX_FIELDS 16

/* End of the CSV field starting at p: the comma after it or the NUL. */
static const char *
CsvFieldEnd(const char *p)
{
	if (*p == '"')
	{
		for (p++; *p; p++)
		{
			if (*p == '"' && p[1] == '"')
				p++;
			else if (*p == '"')
				return p + 1;
		}
		return p;
	}
	while (*p && *p != ',')
		p++;
	return p;
}

/* The value of the CSV field [start, end), unquoted. */
static char *
CsvDecode(const char *start, const char *end)
{
	StringInfoData out;

	initStringInfo(&out);
	if (start < end && *start == '"')
	{
		for (const char *p = start + 1; p < end; p++)
		{
			if (*p == '"' && p + 1 < end && p[1] == '"')
				appendStringInfoChar(&out, *p++);
			else if (*p != '"')
				appendStringInfoChar(&out, *p);
		}
	}
	else
		appendBinaryStringInfo(&out, start, end - start);
	return out.data;
}

/* Append value as pgaudit's append_valid_csv would. */
static void
CsvAppend(StringInfo out, const char *value)
{
	if (strpbrk(value, ",\"\n\r") == NULL)
	{
		appendStringInfoString(out, value);
		return;
	}
	appendStringInfoChar(out, '"');
	for (const char *p = value; *p; p++)
	{
		if (*p == '"')
			appendStringInfoChar(out, '"');
		appendStringInfoChar(out, *p);
	}
	appendStringInfoChar(out, '"');
}

/* A parameter list with every non-empty value replaced by ***. */
static char *
RedactAuditParameters(const char *list)
{
	StringInfoData out;
	const char *p = list;

	initStringInfo(&out);
	for (;;)
	{
		const char *end = CsvFieldEnd(p);

		if (end > p)
		{
			char	   *value = CsvDecode(p, end);

			appendStringInfoString(&out, strcmp(value, "<long field suppressed>") == 0 ?
								   value : "***");
		}
		if (*end != ',')
			break;
		appendStringInfoChar(&out, ',');
		p = end + 1;
	}
	return out.data;
}

static bool
RedactAuditRecord(ErrorData *edata)
{
	const char *msg = edata->message;
	const char *start[AUDIT_MAX_FIELDS];
	const char *end[AUDIT_MAX_FIELDS];
	int			n = 0;
	const char *p;
	char	   *statement;
	char	   *parameters;
	StringInfoData out;

	if (strncmp(msg, AUDIT_PREFIX, strlen(AUDIT_PREFIX)) != 0)
		return false;
	for (p = msg + strlen(AUDIT_PREFIX); n < AUDIT_MAX_FIELDS; p = end[n - 1] + 1)
	{
		start[n] = p;
		end[n] = CsvFieldEnd(p);
		n++;
		if (*end[n - 1] != ',')
			break;
	}
	if (n <= AUDIT_PARAMETERS)
		return false;

	statement = CsvDecode(start[AUDIT_STATEMENT], end[AUDIT_STATEMENT]);
	if (!MentionsSecretName(statement) && SensitivePreparedText(statement) == NULL)
		return true;			/* an AUDIT record, and nothing to redact */
	parameters = CsvDecode(start[AUDIT_PARAMETERS], end[AUDIT_PARAMETERS]);

	initStringInfo(&out);
	appendBinaryStringInfo(&out, msg, start[AUDIT_STATEMENT] - msg);
	CsvAppend(&out, KsRedactStatement(statement));
	appendStringInfoChar(&out, ',');
	if (parameters[0] == '<')	/* <none>, <not logged>, <previously logged> */
		appendBinaryStringInfo(&out, start[AUDIT_PARAMETERS],
							   end[AUDIT_PARAMETERS] - start[AUDIT_PARAMETERS]);
	else
		CsvAppend(&out, RedactAuditParameters(parameters));
	appendStringInfoString(&out, end[AUDIT_PARAMETERS]);
	edata->message = out.data;
	return true;
}

static void
RedactRecord(ErrorData *edata)
{
	RedactState *st = CurrentState();
	bool		sensitive = st->top_sensitive || st->nnested > 0;
	bool		echoes;
	bool		ours;

	/* the common path: a statement that involves no secret function */
	if (!sensitive &&
		!MentionsSecretName(edata->message) && !MentionsSecretName(edata->detail) &&
		!MentionsSecretName(edata->detail_log) && !MentionsSecretName(edata->hint) &&
		!MentionsSecretName(edata->context) && !MentionsSecretName(edata->internalquery))
		return;

	/*
	 * Values quoted back by a message are looked for in records other than
	 * those that log the statement or its plan (errhidestmt: log_statement,
	 * durations, auto_explain), which the rules above cover, and, but for
	 * their CONTEXT lines, other than keysmith's own.
	 */
	echoes = !edata->hide_stmt;
	ours = echoes && RaisedByKeysmith(edata);
	if (edata->message && !RedactAuditRecord(edata))
		edata->message = RedactField(st, edata->message, echoes && !ours);
	edata->detail = RedactField(st, edata->detail, echoes && !ours);
	edata->detail_log = RedactField(st, edata->detail_log, echoes && !ours);
	edata->hint = RedactField(st, edata->hint, echoes && !ours);
	/* context lines are added by whoever was running: a JSON parser, say */
	edata->context = RedactField(st, edata->context, echoes);
	/* a QUERY: line is a statement of its own, failing in a nested level */
	if (edata->internalquery &&
		(MentionsSecretName(edata->internalquery) || sensitive))
		edata->internalquery = KsRedactStatement(edata->internalquery);

	/*
	 * The STATEMENT: line (and csvlog's query field) is printed from
	 * debug_query_string after this hook returns.  Point it at a redacted
	 * copy; postgres.c resets the pointer when the statement ends.
	 */
	if (st->top_sensitive && debug_query_string == st->top_ptr)
	{
		char	   *copy = MemoryContextStrdup(TopMemoryContext, st->top.redacted);
		char	   *old = StatementCopy;

		StatementCopy = copy;
		debug_query_string = copy;
		if (old)
			pfree(old);
	}
}

static void
KsEmitLogHook(ErrorData *edata)
{
	/* before any other hook sees the record: one might write it elsewhere */
	if (keysmith_redact_statements && edata->output_to_server)
		RedactRecord(edata);
	if (prev_emit_log_hook)
		(*prev_emit_log_hook) (edata);
}

/*
 * Every statement the executor starts, nested ones included: a nested
 * statement that names a secret function (a PL/pgSQL statement, a SQL
 * function's body, a prepared statement) becomes a known text of the
 * current top-level statement, so that its copies in CONTEXT lines, plans
 * and AUDIT records are redacted whole.
 */
static void
KsExecutorStart(QueryDesc *queryDesc, int eflags)
{
	/*
	 * The name test first: most statements name no secret function, and
	 * then there is nothing to note and no state to build (statements
	 * that log nothing never need it; the log hook builds it on demand).
	 */
	if (keysmith_redact_statements && MentionsSecretName(queryDesc->sourceText))
		NoteNestedText(CurrentState(), queryDesc->sourceText);
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

void
KsRedactInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = KsEmitLogHook;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = KsExecutorStart;
}
