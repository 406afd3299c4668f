-- test/pgtap/keys_reencrypt_args.sql: reencrypt and key_version_usage refuse
-- bad arguments before touching anything.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(8);

SELECT keysmith.create_key('ra');
CREATE TABLE ra_t (id int PRIMARY KEY, c bytea, s text);
INSERT INTO ra_t VALUES (1, keysmith.encrypt_value('ra', 'one'), 'x');

SELECT throws_ok($$CALL keysmith.reencrypt('ra_t', 'nope')$$, '42703',
    'column "nope" of relation public.ra_t does not exist', 'missing column');
SELECT throws_ok($$CALL keysmith.reencrypt('ra_t', 's')$$, '42804',
    'column "s" of relation public.ra_t is of type text, not bytea', 'column of the wrong type');
SELECT throws_ok($$CALL keysmith.reencrypt('ra_t', 'c', 0)$$, '22023', 'batch_size must be at least 1', 'batch_size 0');
SELECT throws_ok($$CALL keysmith.reencrypt('ra_t', 'c', 10, NULL, '-1 second')$$, '22023', 'pause must not be negative', 'negative pause');
SELECT throws_ok($$CALL keysmith.reencrypt('no_such_table', 'c')$$, '42P01', 'relation "no_such_table" does not exist', 'missing table');
SELECT throws_ok($$SELECT * FROM keysmith.key_version_usage('ra_t', 'nope')$$, '42703', 'column "nope" of relation public.ra_t does not exist', 'key_version_usage checks the column');
SELECT results_eq($$SELECT key_name, key_version, is_current, rows FROM keysmith.key_version_usage('ra_t', 'c')$$,
    $$VALUES ('ra'::text, 1::bigint, true, 1::bigint)$$, 'key_version_usage counts rows per key and version');
SELECT is(keysmith.rewrap_value(NULL), NULL, 'rewrap_value: NULL in, NULL out');

SELECT * FROM finish();
ROLLBACK;
