-- test/pgtap/trust_catalog_writes.sql: no role but the extension owner may
-- write a keysmith table; state changes go through functions (finding 9 of
-- docs/security.md).  The attack first: a keysmith_user forges progress
-- rows for another user's table.  Everything is rolled back.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(9);

CREATE ROLE cw_user NOLOGIN IN ROLE keysmith_user;
CREATE ROLE cw_owner NOLOGIN IN ROLE keysmith_user;
CREATE TABLE public.cw_payroll (id int, c bytea);
ALTER TABLE public.cw_payroll OWNER TO cw_owner;
CREATE TABLE public.cw_mine (id int, c bytea);
ALTER TABLE public.cw_mine OWNER TO cw_user;

SET ROLE cw_user;
SELECT throws_ok($$INSERT INTO keysmith.reencrypt_job (tbl, col, state, started_at) VALUES ('public.cw_payroll', 'c', 'done', now())$$,
    '42501', 'permission denied for table reencrypt_job', 'attack: a keysmith_user inserts a forged progress row');
SELECT throws_ok($$UPDATE keysmith.reencrypt_job SET state = 'done'$$,
    '42501', 'permission denied for table reencrypt_job', 'or updates one');
SELECT throws_ok($$SELECT keysmith._reencrypt_job_put('public.cw_payroll', 'c', 'done', 1000, 1000, NULL, 0, false)$$,
    '42501', 'permission denied for table cw_payroll', 'or writes one through keysmith for a table it may not UPDATE');
SELECT throws_ok($$SELECT * FROM keysmith._reencrypt_job_get('public.cw_payroll', 'c')$$,
    '42501', 'permission denied for table cw_payroll', 'or reads one');
SELECT lives_ok($$SELECT keysmith._reencrypt_job_put('public.cw_mine', 'c', 'running', 0, 5, NULL, 0, false)$$,
    'its own table''s progress is its own to write');
SELECT throws_ok($$SELECT keysmith._reencrypt_job_put('public.cw_mine', 'c', 'hacked', 0, 5, NULL, 0, false)$$,
    '22023', 'a re-encryption job is running or done', 'only real states');
RESET ROLE;
SELECT is((SELECT string_agg(tbl::text, ',') FROM keysmith.reencrypt_job), 'cw_mine',
    'no row for cw_payroll was written');

-- the catalog: only the extension owner holds any write privilege on any
-- keysmith table or sequence
SELECT is((SELECT coalesce(string_agg(DISTINCT c.relname || ':' || pg_get_userbyid(a.grantee) || ':' || a.privilege_type, ', '), '')
             FROM pg_class c
             JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'keysmith',
                  LATERAL aclexplode(c.relacl) a
            WHERE c.relkind IN ('r', 'S', 'p')
              AND a.grantee <> c.relowner
              AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'USAGE')),
          '', 'no role but the owner may write any keysmith table or use any sequence');
SELECT is((SELECT count(*) FROM pg_class c
             JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'keysmith'
            WHERE c.relkind IN ('r', 'S', 'p') AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = c.relowner)),
          0::bigint, 'every keysmith table belongs to a superuser');

SELECT * FROM finish();
ROLLBACK;
