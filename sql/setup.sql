-- setup: the extension is installed (pg_regress --load-extension) and
-- exposes exactly the objects the docs describe.
SELECT extname, extversion FROM pg_extension WHERE extname = 'keysmith';
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       p.provolatile, p.proisstrict, p.proparallel, p.prosecdef
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'keysmith'
 ORDER BY 1, 2;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'keysmith\_%' ORDER BY 1;
-- no function is executable by PUBLIC
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'keysmith' ORDER BY 1, 2;
-- the key tables are dumped with the database
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid
 WHERE e.extname = 'keysmith' ORDER BY 1;
SHOW keysmith.dek_cache_ttl;
SHOW keysmith.dek_cache_size;
