-- test/pgtap/schedules.sql: schedules and registered columns.
-- Every refusal with its SQLSTATE and message, each attack performed
-- first (scheduling a secret one may not rotate, shredding without admin,
-- registering a column one may not update or a key one may not use);
-- the period arithmetic; and that start times are spread within the
-- window.  Runs in the workers' database and is rolled back, so the
-- rotation worker never runs these schedules.
-- keysmith-test-database: postgres
BEGIN;
SELECT plan(55);

SELECT keysmith.create_key('sch_key');
SELECT keysmith.create_key('sch_key2');
SELECT keysmith.revoke_key('sch_key2', 'keysmith_user', 'encrypt');
SELECT keysmith.revoke_key('sch_key2', 'keysmith_user', 'decrypt');
CREATE ROLE sch_user NOLOGIN IN ROLE keysmith_user;
CREATE ROLE sch_other NOLOGIN IN ROLE keysmith_user;
CREATE ROLE sch_keyadmin NOLOGIN IN ROLE keysmith_admin;
CREATE ROLE sch_target LOGIN;
GRANT sch_target TO sch_user WITH ADMIN OPTION;
SELECT keysmith.grant_key('sch_key', 'sch_user', 'admin');
SELECT keysmith.grant_key('sch_key', 'sch_keyadmin', 'admin');
CREATE SCHEMA sch;
GRANT USAGE ON SCHEMA sch TO sch_user, sch_other;
CREATE FUNCTION sch.rot(step text, secret_name text, token uuid, pending text) RETURNS void
    LANGUAGE sql AS $$ SELECT $$;
GRANT EXECUTE ON FUNCTION sch.rot(text, text, uuid, text) TO sch_user;
CREATE TABLE sch.t (id int PRIMARY KEY, c bytea, note text);
CREATE VIEW sch.v AS SELECT * FROM sch.t;
GRANT SELECT, UPDATE ON sch.t TO sch_user;
GRANT SELECT ON sch.t TO sch_other;

SET ROLE sch_user;
SELECT keysmith.create_secret('sch/app', 'sch_key', 'postgres_role', '{"role": "sch_target"}');
SELECT keysmith.create_secret('sch/none', 'sch_key', 'none', '{}', 'v');

-- arguments
SELECT throws_ok($$SELECT keysmith.schedule_rotation(NULL, '1 day')$$,
    '22004', 'secret must not be null', 'a NULL secret');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', NULL)$$,
    '22004', 'every must not be null', 'a NULL period');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, NULL)$$,
    '22004', 'starting must not be null', 'a NULL start');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '0')$$,
    '22023', 'a schedule''s period must be at least one second', 'a period of zero');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '-1 day')$$,
    '22023', 'a schedule''s period must be at least one second', 'a negative period');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', '-1 hour')$$,
    '22023', 'a schedule''s window must not be negative and must be shorter than its period',
    'a negative window');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', '1 day')$$,
    '22023', 'a schedule''s window must not be negative and must be shorter than its period',
    'a window as long as the period');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, now(), '[1]')$$,
    '22023', 'schedule options must be a JSON object', 'options that are not an object');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, now(), '{"destroy_previous": "1 day"}')$$,
    '22023', 'unknown schedule option "destroy_previous"', 'a misspelt option');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, now(), '{"destroy_previous_after": 7}')$$,
    '22023', 'schedule option destroy_previous_after must be an interval in a string, such as "7 days"',
    'destroy_previous_after as a number');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, now(), '{"destroy_previous_after": "soon"}')$$,
    '22007', NULL, 'destroy_previous_after that is no interval');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, now(), '{"destroy_previous_after": "-1 day"}')$$,
    '22023', 'schedule option destroy_previous_after must not be negative', 'a negative destroy_previous_after');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/none', '1 day')$$,
    '22023', 'secret "sch/none" has strategy none and is not rotated by keysmith',
    'a secret that keysmith does not rotate');

-- first runs: at starting plus the offset, or the latest period begun
SELECT ok(keysmith.schedule_rotation('sch/app', '1 day', '1 hour', '2030-01-01 00:00+00')
          BETWEEN '2030-01-01 00:00+00' AND '2030-01-01 01:00+00',
          'a future start: the first run is due within the window after it');
SELECT ok(keysmith.schedule_rotation('sch/app', '1 day', NULL, now() - interval '10 days 1 hour')
          BETWEEN now() - interval '1 day' AND now(),
          'a start ten periods ago: only the latest period is due, once');
SELECT is((SELECT count(*)::int FROM keysmith.rotation_schedules WHERE target = 'sch/app'), 1,
          'scheduling again replaces the schedule');
SELECT is((SELECT kind || ' ' || every::text || ' ' || owner_role::text FROM keysmith.rotation_schedules
            WHERE target = 'sch/app'), 'secret 1 day sch_user', 'rotation_schedules shows it');
SELECT is((SELECT next_due FROM keysmith.secrets WHERE name = 'sch/app'),
          (SELECT next_due FROM keysmith.rotation_schedules WHERE target = 'sch/app'),
          'the secrets view shows the next due time');
RESET ROLE;

-- attacks by a role holding nothing on the secret, then rotate only
SET ROLE sch_other;
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day')$$,
    '42501', 'permission denied for secret "sch/app"', 'scheduling a secret one may not rotate');
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/nothing', '1 day')$$,
    '42501', 'permission denied for secret "sch/nothing"', 'a missing secret looks the same');
SELECT throws_ok($$SELECT keysmith.unschedule_rotation('sch/app')$$,
    '42501', 'permission denied for secret "sch/app"', 'unscheduling a secret one may not rotate');
SELECT is((SELECT count(*)::int FROM keysmith.rotation_schedules WHERE target = 'sch/app'), 0,
          'rotation_schedules hides schedules of secrets one holds nothing on');
RESET ROLE;
SET ROLE sch_user;
SELECT keysmith.grant_secret('sch/app', 'sch_other', 'rotate');
RESET ROLE;
SET ROLE sch_other;
SELECT throws_ok($$SELECT keysmith.schedule_rotation('sch/app', '1 day', NULL, now(), '{"destroy_previous_after": "7 days"}')$$,
    '42501', 'permission denied to shred versions of secret "sch/app"',
    'shredding needs admin, rotate is not enough');
SELECT lives_ok($$SELECT keysmith.schedule_rotation('sch/app', '7 days')$$, 'rotate is enough to schedule');
SELECT is((SELECT owner_role::text FROM keysmith.rotation_schedules WHERE target = 'sch/app'), 'sch_other',
          'the schedule acts as the role that set it');
RESET ROLE;
SET ROLE sch_user;
SELECT lives_ok($$SELECT keysmith.schedule_rotation('sch/app', '30 days', '6 hours', now(), '{"destroy_previous_after": "7 days"}')$$,
    'admin may shred');
SELECT is((SELECT destroy_previous_after FROM keysmith.rotation_schedules WHERE target = 'sch/app'), '7 days'::interval,
          'destroy_previous_after is kept');
SELECT is(keysmith.unschedule_rotation('sch/app'), true, 'unschedule_rotation');
SELECT is(keysmith.unschedule_rotation('sch/app'), false, 'unscheduling twice says there was nothing');

-- a thousand secrets on one schedule do not fire in one second
SELECT count(keysmith.create_secret('sch/many/' || i, 'sch_key', 'sql', '{"function": "sch.rot"}', 'v'))
  FROM generate_series(1, 1000) i;
SELECT count(keysmith.schedule_rotation('sch/many/' || i, '1 day', '1 hour', '2030-01-01 00:00+00'))
  FROM generate_series(1, 1000) i;
SELECT ok((SELECT bool_and(next_due >= '2030-01-01 00:00+00' AND next_due < '2030-01-01 01:00+00')
             FROM keysmith.rotation_schedules WHERE target LIKE 'sch/many/%'),
          'every start time lies within the window');
SELECT cmp_ok((SELECT max(n) FROM (SELECT count(*) AS n FROM keysmith.rotation_schedules
                                     WHERE target LIKE 'sch/many/%'
                                     GROUP BY date_trunc('second', next_due)) s)::int, '<=', 5,
              'no second of the window has more than 5 of the 1000 start times');
SELECT cmp_ok((SELECT count(DISTINCT date_trunc('minute', next_due)) FROM keysmith.rotation_schedules
                WHERE target LIKE 'sch/many/%')::int, '=', 60,
              'every minute of the window has start times');
RESET ROLE;

-- period arithmetic, months included
SELECT is(keysmith._schedule_period('2026-01-31 00:00+00', '1 month', '0', '2026-03-01 00:00+00'), 1::bigint,
          'a month after Jan 31 is Feb 28: period 1 on Mar 1');
SELECT is(keysmith._schedule_period('2026-01-31 00:00+00', '1 month', '0', '2026-01-30 00:00+00'), -1::bigint,
          'before the start: no period');
SELECT is(keysmith._schedule_period('2026-01-01 00:00+00', '1 day', '2 hours', '2026-01-11 01:59+00'), 9::bigint,
          'a period is due only after its offset');

-- keys: admin on the key (keysmith admins hold it on every key), and
-- rotate_dek, which only keysmith admins may run
SET ROLE sch_user;
SELECT throws_ok($$SELECT keysmith.schedule_key_rotation('sch_key', '90 days')$$,
    '42501', 'permission denied for function rotate_dek',
    'admin on a key is not enough without the right to run rotate_dek');
RESET ROLE;
SET ROLE sch_keyadmin;
SELECT throws_ok($$SELECT keysmith.schedule_key_rotation(NULL, '90 days')$$,
    '22004', 'key_name must not be null', 'a NULL key name');
SELECT throws_ok($$SELECT keysmith.schedule_key_rotation('sch_key', '90 days', NULL)$$,
    '22004', 'reencrypt must not be null', 'a NULL reencrypt');
SELECT throws_ok($$SELECT keysmith.schedule_key_rotation('sch_nokey', '90 days')$$,
    '42704', 'key "sch_nokey" does not exist', 'a missing key');
SELECT lives_ok($$SELECT keysmith.schedule_key_rotation('sch_key', '90 days')$$, 'an admin schedules its key');
SELECT is((SELECT kind || ' ' || reencrypt::text || ' ' || last_state FROM keysmith.rotation_schedules
            WHERE target = 'sch_key'), 'key true done', 'rotation_schedules shows key schedules');
SELECT is(keysmith.unschedule_key_rotation('sch_key'), true, 'unschedule_key_rotation');
RESET ROLE;
SET ROLE sch_user;
SELECT throws_ok($$SELECT keysmith.unschedule_key_rotation('sch_key2')$$,
    '42501', 'permission denied to administer key "sch_key2"', 'unscheduling a key one does not administer');

-- registered columns
SELECT throws_ok($$SELECT keysmith.register_column('sch.t', 'note', 'sch_key')$$,
    '42804', 'column "note" of relation sch.t is of type text, not bytea', 'a column that is not bytea');
SELECT throws_ok($$SELECT keysmith.register_column('sch.t', 'nope', 'sch_key')$$,
    '42703', 'column "nope" of relation t does not exist', 'a missing column');
SELECT throws_ok($$SELECT keysmith.register_column('sch.v', 'c', 'sch_key')$$,
    '42809', 'v is not a table', 'a view');
SELECT throws_ok($$SELECT keysmith.register_column('sch.t', 'c', 'sch_key2')$$,
    '42501', 'permission denied to re-encrypt under key "sch_key2"', 'a key one may not use');
SELECT throws_ok($$SELECT keysmith.register_column('sch.t', 'c', 'sch_key', 'id +')$$,
    '42601', NULL, 'a context expression that does not parse');
SELECT lives_ok($$SELECT keysmith.register_column('sch.t', 'c', 'sch_key', 'id::text')$$, 'register_column');
RESET ROLE;
SET ROLE sch_other;
SELECT throws_ok($$SELECT keysmith.register_column('sch.t', 'c', 'sch_key')$$,
    '42501', 'permission denied to re-encrypt column "c" of relation t',
    'registering a column one may not update (the worker would update it for you)');
SELECT throws_ok($$SELECT keysmith.unregister_column('sch.t', 'c')$$,
    '42501', 'permission denied to unregister column "c" of relation t', 'unregistering another''s column');
SELECT is((SELECT registered_by::text FROM keysmith.encrypted_columns WHERE tbl = 'sch.t'::regclass), 'sch_user',
          'encrypted_columns shows it to a role that can read the table');
RESET ROLE;
SELECT throws_ok($$SELECT keysmith.register_column('keysmith.secret_version', 'ciphertext', 'sch_key')$$,
    '42501', 'keysmith''s own tables cannot be registered for re-encryption', 'keysmith''s own table');
SET ROLE sch_user;
SELECT is(keysmith.unregister_column('sch.t', 'c'), true, 'unregister_column');
SELECT is(keysmith.unregister_column('sch.t', 'c'), false, 'unregistering twice says there was nothing');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
