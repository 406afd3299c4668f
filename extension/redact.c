/*
 * extension/redact.c
 *
 * Keeps plaintext typed into SQL out of the server log.  With
 * log_statement = 'all', log_min_duration_statement or
 * log_min_error_statement, "SELECT keysmith.encrypt_value('k', '4111-...')"
 * would be written to the log as it was typed.  An emit_log_hook sees every
 * log line before it is written: when the line is about a statement that
 * calls a keysmith function taking a secret, every string and numeric
 * constant in the statement text is replaced by '***', in the message, in
 * its detail (the PREPARE text or the bind parameters) and in the
 * STATEMENT: line, so the log keeps the statement's shape and loses its
 * values.  keysmith.redact_statements (on by default, superuser-only) turns
 * it off.
 *
 * What it cannot cover is in docs/security.md: pg_stat_activity and
 * pg_stat_statements (which keep their own copy of the text), logs kept by
 * clients and poolers, and values that reach keysmith through a column or
 * a variable rather than a literal.  Bind parameters with
 * log_parameter_max_length = 0 keep values out of every server-side text.
 *
 * The hook runs inside error reporting: it must not throw.  It only scans
 * and copies strings, in ErrorContext, which is reserved for this.
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include "keysmith.h"

bool		keysmith_redact_statements = true;

static emit_log_hook_type prev_emit_log_hook = NULL;

/* Our copy that debug_query_string points to, if any; TopMemoryContext. */
static char *redacted_query = NULL;

/*
 * keysmith functions whose arguments may be secrets.  Matching is by name,
 * case-insensitively, anywhere in the text: "encrypt_value" also covers
 * decrypt_value, whose context argument may be sensitive too;
 * "_kms_provider" covers create_ and alter_kms_provider, whose options are
 * refused when they hold a secret, but whose text would still log it.
 */
static const char *const SecretFunctions[] = {
	"encrypt_value",
	"create_secret",
	"put_secret_value",
	"_kms_provider",
};

static bool
MentionsSecretFunction(const char *text)
{
	if (text == NULL)
		return false;
	for (int i = 0; i < (int) lengthof(SecretFunctions); i++)
	{
		const char *name = SecretFunctions[i];
		size_t		len = strlen(name);

		for (const char *p = text; *p; p++)
			if (pg_strncasecmp(p, name, len) == 0)
				return true;
	}
	return false;
}

static bool
IsIdentChar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		c == '_' || c == '$' || (unsigned char) c >= 0x80;
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

/*
 * The text with every string constant ('...', E'...', $tag$...$tag$) and
 * numeric constant replaced by '***' / ***, and comments dropped; quoted
 * identifiers and everything else kept.  palloc'd in the current context.
 */
char *
KsRedactStatement(const char *sql)
{
	StringInfoData out;
	const char *p = sql;

	initStringInfo(&out);
	while (*p)
	{
		size_t		tag;

		if (p[0] == '-' && p[1] == '-')
		{
			while (*p && *p != '\n')
				p++;
			appendStringInfoChar(&out, ' ');
		}
		else if (p[0] == '/' && p[1] == '*')
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
			/* E'..' allows backslash escapes; '' is a quote in any form */
			bool		backslash = p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
				(p - 1 == sql || !IsIdentChar(p[-2]));

			p++;
			while (*p)
			{
				if (backslash && *p == '\\' && p[1])
					p += 2;
				else if (*p == '\'' && p[1] == '\'')
					p += 2;
				else if (*p == '\'')
				{
					p++;
					break;
				}
				else
					p++;
			}
			appendStringInfoString(&out, "'***'");
		}
		else if (*p == '"')
		{
			const char *start = p++;

			while (*p && !(*p == '"' && p[1] != '"'))
				p += (*p == '"') ? 2 : 1;
			if (*p)
				p++;
			appendBinaryStringInfo(&out, start, p - start);
		}
		else if ((tag = DollarTag(p)) > 0 && (p == sql || !IsIdentChar(p[-1])))
		{
			const char *body = p + tag;
			const char *end = body;

			while (*end && strncmp(end, p, tag) != 0)
				end++;
			p = *end ? end + tag : end;
			appendStringInfoString(&out, "'***'");
		}
		else if ((*p >= '0' && *p <= '9') && (p == sql || !IsIdentChar(p[-1])))
		{
			while (IsIdentChar(*p) || *p == '.' ||
				   ((*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E')))
				p++;
			appendStringInfoString(&out, "***");
		}
		else
			appendStringInfoChar(&out, *p++);
	}
	return out.data;
}

/* Replace the first occurrence of what in text by with; NULL if absent. */
static char *
ReplaceOnce(const char *text, const char *what, const char *with)
{
	const char *at = strstr(text, what);
	StringInfoData out;

	if (at == NULL || *what == '\0')
		return NULL;
	initStringInfo(&out);
	appendBinaryStringInfo(&out, text, at - text);
	appendStringInfoString(&out, with);
	appendStringInfoString(&out, at + strlen(what));
	return out.data;
}

static void
KsEmitLogHook(ErrorData *edata)
{
	const char *query = debug_query_string;
	char	   *query_redacted = NULL;

	if (prev_emit_log_hook)
		(*prev_emit_log_hook) (edata);
	if (!keysmith_redact_statements || !edata->output_to_server)
		return;
	if (!MentionsSecretFunction(query) && !MentionsSecretFunction(edata->message) &&
		!MentionsSecretFunction(edata->detail) && !MentionsSecretFunction(edata->internalquery))
		return;

	if (query != NULL)
		query_redacted = KsRedactStatement(query);
	if (edata->message)
	{
		/* "statement: <query>", "duration: ... statement: <query>", ... */
		char	   *m = query ? ReplaceOnce(edata->message, query, query_redacted) : NULL;

		if (m)
			edata->message = m;
		else if (MentionsSecretFunction(edata->message))
			edata->message = KsRedactStatement(edata->message);
	}

	/* "prepare: PREPARE ..." and "parameters: $1 = '...'" */
	if (edata->detail)
		edata->detail = KsRedactStatement(edata->detail);
	if (edata->internalquery)
		edata->internalquery = KsRedactStatement(edata->internalquery);

	/*
	 * The STATEMENT: line is printed from debug_query_string after this
	 * hook returns.  Point it at a redacted copy that lives until the next
	 * one; postgres.c resets the pointer when the statement ends.
	 */
	if (query_redacted != NULL && query != redacted_query)
	{
		char	   *copy = MemoryContextStrdup(TopMemoryContext, query_redacted);
		char	   *old = redacted_query;

		redacted_query = copy;
		debug_query_string = copy;
		if (old)
			pfree(old);
	}
}

void
KsRedactInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = KsEmitLogHook;
}
