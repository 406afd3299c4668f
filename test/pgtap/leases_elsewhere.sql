-- test/pgtap/leases_elsewhere.sql: this suite's database is not
-- keysmith.database_name, where the reaper works, so leases are refused
-- here rather than issued and never revoked.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(3);

CREATE ROLE tap_elsewhere_rw NOLOGIN;
SELECT throws_ok($$SELECT keysmith.create_role_template('t', ARRAY['tap_elsewhere_rw'])$$,
    '55000', 'leased roles are managed in database "postgres"', 'create_role_template outside the reaper''s database');
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('t')$$,
    '55000', 'leased roles are managed in database "postgres"', 'issue_role outside the reaper''s database');
SELECT is(current_setting('keysmith.database_name'), 'postgres', 'keysmith.database_name defaults to postgres');

SELECT * FROM finish();
ROLLBACK;
