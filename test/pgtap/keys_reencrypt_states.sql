-- keysmith-test-database: keysmith_tap
-- test/pgtap/keys_reencrypt_states.sql: keysmith.reencrypt_job.state holds only
-- the states keysmith writes (running, done: extension/keys/reencrypt.h).
-- Up to 0.10 the column was unchecked text, so even the table's owner
-- could store any state; from 0.11 a CHECK refuses it, and the update to
-- 0.11 stops on rows keysmith did not write.  The bad writes come first.
-- Everything is rolled back.
BEGIN;
SELECT plan(12);

CREATE TABLE public.rs_t (id int PRIMARY KEY, c bytea);
SELECT keysmith.create_key('rs');
INSERT INTO public.rs_t SELECT i, keysmith.encrypt_value('rs', 'v' || i) FROM generate_series(1, 10) i;
SELECT keysmith._reencrypt_job_put('public.rs_t', 'c', 'running', 0, 10, NULL, 0, false);

-- the table's owner (the extension's, a superuser) writes an unknown state
SELECT throws_ok($$UPDATE keysmith.reencrypt_job SET state = 'paused'$$,
    '23514', 'new row for relation "reencrypt_job" violates check constraint "reencrypt_job_state_check"',
    'attack: the table owner sets an unknown state on a job row');
SELECT throws_ok($$INSERT INTO keysmith.reencrypt_job (tbl, col, state, started_at) VALUES ('public.rs_t', 'id', 'Done', now())$$,
    '23514', 'new row for relation "reencrypt_job" violates check constraint "reencrypt_job_state_check"',
    'or inserts a row in one (case matters)');
SELECT is((SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'reencrypt_job_state_check'
             AND conrelid = 'keysmith.reencrypt_job'::regclass),
    $$CHECK ((state = ANY (ARRAY['running'::text, 'done'::text])))$$,
    'the CHECK lists exactly running and done');
-- every state keysmith writes is allowed: the steps of keysmith.reencrypt
-- (a procedure, which commits) run the job to done in this transaction
SELECT keysmith.rotate_dek('rs');
SELECT keysmith._reencrypt_start('public.rs_t', 'c', 3, '0');
DO $$ BEGIN WHILE keysmith._reencrypt_step('public.rs_t', 'c', 3, NULL) LOOP END LOOP; END $$;
SELECT keysmith._reencrypt_end('public.rs_t');
SELECT is((SELECT state || ',' || rows_done FROM keysmith.reencrypt_job WHERE tbl = 'public.rs_t'::regclass),
    'done,10', 'reencrypt''s steps write running and then done under the CHECK');
SELECT lives_ok($$SELECT keysmith._reencrypt_job_put('public.rs_t', 'c', 'running', 0, 10, NULL, 0, false)$$,
    'and the writer may start a done job again');

-- The update to 0.11 from a 0.10 catalog holding a row keysmith never
-- wrote (up to 0.2 any keysmith user could write the table).
DROP EXTENSION keysmith CASCADE;
CREATE EXTENSION keysmith VERSION '0.10';
SELECT is((SELECT count(*) FROM pg_constraint WHERE conname = 'reencrypt_job_state_check'), 0::bigint,
    'at 0.10 the column has no CHECK');
INSERT INTO keysmith.reencrypt_job (tbl, col, state, started_at) VALUES ('public.rs_t', 'c', 'done', now());
SELECT lives_ok($$INSERT INTO keysmith.reencrypt_job (tbl, col, state, started_at) VALUES ('public.rs_t', 'id', 'paused', now())$$,
    'at 0.10 a row in a state keysmith never writes is accepted');
SELECT throws_ok($$ALTER EXTENSION keysmith UPDATE TO '0.11'$$,
    '23514', 'keysmith.reencrypt_job holds 1 row(s) in a state keysmith never writes',
    'the update to 0.11 stops on it, and says so');
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'keysmith'), '0.10', 'and leaves the extension at 0.10');
UPDATE keysmith.reencrypt_job SET state = 'running' WHERE state = 'paused';
SELECT lives_ok($$ALTER EXTENSION keysmith UPDATE TO '0.11'$$,
    'with that row set to running as the hint says, and a done row, the update goes through');
SELECT is((SELECT string_agg(state, ',' ORDER BY col) FROM keysmith.reencrypt_job), 'done,running',
    'keeping both rows');
SELECT throws_ok($$UPDATE keysmith.reencrypt_job SET state = 'paused'$$,
    '23514', 'new row for relation "reencrypt_job" violates check constraint "reencrypt_job_state_check"',
    'and from then on the CHECK refuses unknown states');

SELECT * FROM finish();
ROLLBACK;
