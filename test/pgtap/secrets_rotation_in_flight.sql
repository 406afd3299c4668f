-- keysmith-test-database: postgres
-- test/pgtap/secrets_rotation_in_flight.sql: from 0.11 "rotation in flight" is
-- spelled once in SQL, keysmith._rotation_in_flight(state), which the
-- unique index on keysmith.rotation and the secrets view share.  The
-- index still allows one rotation in flight per secret, and the planner
-- still matches it to the state test the worker's queries make
-- (rotator/rotation.h, KS_ROT_IN_FLIGHT_SQL), which needs the function to
-- be inlined.  Runs in the rotation worker's database; everything is
-- rolled back.
BEGIN;
SELECT plan(7);

SELECT results_eq(
    $$SELECT s, keysmith._rotation_in_flight(s)
        FROM unnest(ARRAY['create', 'set', 'test', 'finish', 'finished', 'failed', 'cancelled']) s$$,
    $$VALUES ('create', true), ('set', true), ('test', true), ('finish', true),
             ('finished', false), ('failed', false), ('cancelled', false)$$,
    'in flight: create, set, test and finish of the states the rotation CHECK allows');
SELECT is(keysmith._rotation_in_flight(NULL), NULL, 'a NULL state gives NULL, as the test it replaces');
SELECT is((SELECT pg_get_indexdef('keysmith.rotation_in_flight_idx'::regclass)),
    'CREATE UNIQUE INDEX rotation_in_flight_idx ON keysmith.rotation USING btree (secret_name) WHERE keysmith._rotation_in_flight(state)',
    'the unique index asks the function');

SELECT keysmith.create_key('rif');
SELECT keysmith.create_secret('rif/s', 'rif', 'none', '{}', 'v') IS NOT NULL;
INSERT INTO keysmith.rotation (token, secret_name, state, requested_by)
VALUES (gen_random_uuid(), 'rif/s', 'set', 'postgres');
INSERT INTO keysmith.rotation (token, secret_name, state, requested_by, started_at, finished_at)
VALUES (gen_random_uuid(), 'rif/s', 'failed', 'postgres', now() - interval '1 hour', now() - interval '1 hour');
SELECT throws_ok($$INSERT INTO keysmith.rotation (token, secret_name, state, requested_by)
                   VALUES (gen_random_uuid(), 'rif/s', 'test', 'postgres')$$,
    '23505', 'duplicate key value violates unique constraint "rotation_in_flight_idx"',
    'attack: a second rotation in flight for one secret is refused by the index');

-- the plan of the worker's queue query (rotator/rotation.c): the index
-- serves it only if the planner sees through the function
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line text;
    out text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        out := out || line || E'\n';
    END LOOP;
    RETURN out;
END
$$;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT matches(pg_temp.plan_of($$SELECT token FROM keysmith.rotation WHERE secret_name = 'rif/s'
                                  AND state OPERATOR(pg_catalog.=) ANY (ARRAY['create', 'set', 'test', 'finish'])$$),
    'Index Scan using rotation_in_flight_idx',
    'a query that spells the set out still uses the partial index');
RESET enable_seqscan;
RESET enable_bitmapscan;

SELECT is((SELECT state FROM keysmith.secrets WHERE name = 'rif/s'), 'rotating',
    'the secrets view shows the secret rotating');
CREATE ROLE rif_user NOLOGIN IN ROLE keysmith_user;
SET ROLE rif_user;
SELECT lives_ok($$SELECT pg_catalog.string_agg(state, $q$,$q$) FROM keysmith.secrets$$, 'a keysmith user may read the view that calls it');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
