/*
 * extension/common/args.c
 *
 * Taking apart the jsonb options objects that schedules and KMS providers
 * accept (see extension/common/args.h).
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "extension/common/args.h"

int
KsJsonbOptions(Jsonb *options, const char *what, int max, char **names, char **values)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;

	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (n == max)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s take at most %d members", what, max)));
		names[n] = pnstrdup(v.val.string.val, v.val.string.len);
		(void) JsonbIteratorNext(&it, &v, true);
		values[n] = v.type == jbvString ? pnstrdup(v.val.string.val, v.val.string.len) : NULL;
		n++;
	}
	return n;
}
