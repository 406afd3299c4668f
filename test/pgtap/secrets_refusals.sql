-- test/pgtap/secrets_refusals.sql: every refusal of the secrets store
-- and of rotate_secret / cancel_rotation, with its SQLSTATE and message.
-- Attacks are performed first (a role targeting a role it does not
-- administer, reading a secret it holds nothing on, ...).  Runs in the
-- workers' database; everything is rolled back, so the rotation worker
-- never sees these rotations.
-- keysmith-test-database: postgres
BEGIN;
SELECT plan(63);

SELECT keysmith.create_key('sr_key');
CREATE ROLE sr_user NOLOGIN IN ROLE keysmith_user;
CREATE ROLE sr_reader NOLOGIN IN ROLE keysmith_user;
CREATE ROLE sr_nokey NOLOGIN IN ROLE keysmith_user;
-- create_key grants encrypt and decrypt to keysmith_user; not here
SELECT keysmith.revoke_key('sr_key', 'keysmith_user', 'encrypt');
SELECT keysmith.revoke_key('sr_key', 'keysmith_user', 'decrypt');
SELECT keysmith.grant_key('sr_key', 'sr_user', 'encrypt');
SELECT keysmith.grant_key('sr_key', 'sr_user', 'decrypt');
SELECT keysmith.grant_key('sr_key', 'sr_reader', 'decrypt');
CREATE ROLE sr_target LOGIN;
CREATE ROLE sr_target2 LOGIN;
CREATE ROLE sr_other LOGIN;
CREATE ROLE sr_super LOGIN SUPERUSER;
CREATE ROLE sr_nologin NOLOGIN;
CREATE ROLE sr_a LOGIN;
CREATE ROLE sr_b LOGIN;
CREATE ROLE sr_c LOGIN;
CREATE ROLE sr_pair_owner NOLOGIN;
CREATE ROLE sr_loginowner LOGIN;
GRANT sr_pair_owner TO sr_a, sr_b;
GRANT sr_target, sr_target2, sr_nologin, sr_a, sr_b, sr_c TO sr_user WITH ADMIN OPTION;

-- arguments
SELECT throws_ok($$SELECT keysmith.create_secret(NULL, 'sr_key', 'none', '{}', 'v')$$,
    '22004', 'name must not be null', 'a NULL name');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', NULL, 'none', '{}', 'v')$$,
    '22004', 'key_name must not be null', 'a NULL key name');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'none', '{}')$$,
    '22004', 'a secret of strategy none needs a value', 'strategy none without a value');
SELECT throws_ok($$SELECT keysmith.create_secret('sr x', 'sr_key', 'none', '{}', 'v')$$,
    '42602', 'invalid secret name', 'a name with a space');
SELECT throws_ok($$SELECT keysmith.create_secret(repeat('n', 129), 'sr_key', 'none', '{}', 'v')$$,
    '42602', 'invalid secret name', 'a name of 129 characters');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'vault', '{}', 'v')$$,
    '22023', 'unknown rotation strategy "vault"', 'an unknown strategy');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"rol": "sr_target"}')$$,
    '22023', 'unknown option "rol" for strategy postgres_role', 'a misspelt option');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{}')$$,
    '22023', 'strategy postgres_role needs option role', 'postgres_role without its role');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_target", "password_length": 8}')$$,
    '22023', 'invalid password_length', 'a password shorter than 16');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'none', '{"keep_versions": 0}', 'v')$$,
    '22023', 'invalid keep_versions', 'keep_versions 0');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'none', '[1]', 'v')$$,
    '22023', 'secret options must be a JSON object', 'options that are not an object');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role_pair', '{"roles": ["sr_a", "sr_a"], "owner_role": "sr_pair_owner"}')$$,
    '22023', 'option roles must name two different roles', 'a pair of one role twice');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role_pair', '{"roles": ["sr_a", "sr_b"]}')$$,
    '22023', 'strategy postgres_role_pair needs options roles and owner_role', 'a pair without its owner role');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'no_such_key', 'none', '{}', 'v')$$,
    '42704', 'key "no_such_key" does not exist', 'an unknown key');

-- whose password may be set: the attacks
SET ROLE sr_user;
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_other"}')$$,
    '42501', 'permission denied to set the password of role "sr_other"',
    'a role the creator holds no ADMIN OPTION on');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_super"}')$$,
    '42501', 'role "sr_super" is a superuser', 'a superuser, by a creator who is none');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_nobody"}')$$,
    '42704', 'role "sr_nobody" does not exist', 'a role that does not exist');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_nologin"}')$$,
    '22023', 'role "sr_nologin" cannot log in', 'a NOLOGIN role: no login could prove a rotation');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role_pair', '{"roles": ["sr_a", "sr_c"], "owner_role": "sr_pair_owner"}')$$,
    '22023', 'role "sr_c" is not a member of owner_role "sr_pair_owner"', 'a pair role outside the owner role');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role_pair', '{"roles": ["sr_a", "sr_b"], "owner_role": "sr_loginowner"}')$$,
    '22023', 'owner_role "sr_loginowner" must be NOLOGIN', 'an owner role that can log in');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_target"}', 'not json')$$,
    '22023', 'a role credential must be a JSON object', 'a given credential that is not JSON');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "sr_target"}', '{"username": "sr_other", "password": "p4ssw0rd-long-enough"}')$$,
    '22023', 'the credential''s username "sr_other" is not a role of secret "sr/x"', 'a given credential for another role');
RESET ROLE;

-- the sql strategy: the function is named with its schema, exists with the
-- strategy's signature, returns void, and the creator may execute it
CREATE FUNCTION public.sr_notvoid(step text, secret_name text, token uuid, pending text) RETURNS int
    LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION public.sr_private(step text, secret_name text, token uuid, pending text) RETURNS void
    LANGUAGE sql AS '';
REVOKE ALL ON FUNCTION public.sr_private(text, text, uuid, text) FROM PUBLIC;
SET ROLE sr_user;
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'sql', '{"function": "sr_private"}', 'v')$$,
    '22023', 'option function must be a schema-qualified function name', 'a function name without its schema');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'sql', '{}', 'v')$$,
    '22023', 'strategy sql needs option function', 'strategy sql without its function');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'sql', '{"function": "public.sr_nosuch"}', 'v')$$,
    '42883', 'function public.sr_nosuch(text, text, uuid, text) does not exist', 'a function that does not exist');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'sql', '{"function": "public.sr_notvoid"}', 'v')$$,
    '42P13', 'function public.sr_notvoid must return void', 'a function that returns something');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'sql', '{"function": "public.sr_private"}', 'v')$$,
    '42501', 'permission denied for function public.sr_private', 'a function the creator may not execute');
RESET ROLE;
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'sql', '{"function": "public.sr_private"}')$$,
    '22004', 'a secret of strategy sql needs a value', 'strategy sql without its first value');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_remote', '{"role": "app", "admin_secret": "a"}')$$,
    '22023', 'strategy postgres_remote needs options conninfo, role and admin_secret', 'postgres_remote without its conninfo');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_remote', '{"conninfo": "host=127.0.0.1 password=pw", "role": "app", "admin_secret": "a"}')$$,
    '22023', 'option conninfo must not hold a password', 'a conninfo with a password in it');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_remote', '{"conninfo": "host=127.0.0.1", "role": "app", "admin_secret": "sr/none"}')$$,
    '42704', 'admin secret "sr/none" does not exist', 'an admin secret that does not exist');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "pg_monitor"}')$$,
    '42501', 'keysmith does not rotate the password of role "pg_monitor"', 'a predefined role, even for a superuser');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'postgres_role', '{"role": "keysmith_admin"}')$$,
    '42501', 'keysmith does not rotate the password of role "keysmith_admin"', 'a keysmith role');
SET ROLE sr_nokey;
SELECT throws_ok($$SELECT keysmith.create_secret('sr/x', 'sr_key', 'none', '{}', 'v')$$,
    '42501', 'permission denied to encrypt with key "sr_key"', 'a creator without encrypt on the key');
RESET ROLE;
SELECT is((SELECT count(*) FROM keysmith.secret WHERE name LIKE 'sr/%'), 0::bigint, 'no refused call left a secret behind');

-- the real thing, by sr_user
SET ROLE sr_user;
SELECT lives_ok($$SELECT keysmith.create_secret('sr/app', 'sr_key', 'postgres_role', '{"role": "sr_target"}')$$,
    'a role with ADMIN OPTION on its target creates a secret');
SELECT lives_ok($$SELECT keysmith.create_secret('sr/api', 'sr_key', 'none', '{}', 'tok-1')$$,
    'and a secret of strategy none');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/app', 'sr_key', 'none', '{}', 'v')$$,
    '42710', 'secret "sr/app" already exists', 'a second secret of the same name');
SELECT throws_ok($$SELECT keysmith.create_secret('sr/app2', 'sr_key', 'postgres_role', '{"role": "sr_target"}')$$,
    '42710', 'role "sr_target" is already rotated by secret "sr/app"', 'a second secret on the same role');
RESET ROLE;

-- reading
SET ROLE sr_reader;
SELECT throws_ok($$SELECT keysmith.get_secret('sr/app')$$,
    '42501', 'permission denied for secret "sr/app"', 'no read privilege: 42501 and no value');
SELECT throws_ok($$SELECT keysmith.get_secret('sr/none')$$,
    '42501', 'permission denied for secret "sr/none"', 'a secret that does not exist looks the same to a non-admin');
SELECT is((SELECT count(*) FROM keysmith.secrets), 0::bigint, 'the secrets view shows sr_reader nothing');
SELECT throws_ok($$SELECT * FROM keysmith.secret_version$$,
    '42501', 'permission denied for table secret_version', 'the version table is not readable');
RESET ROLE;
SELECT throws_ok($$SELECT keysmith.get_secret('sr/none')$$,
    '42704', 'secret "sr/none" does not exist', 'to a keysmith admin a missing secret is 42704');
SELECT throws_ok($$SELECT keysmith.get_secret('sr/app', 'latest')$$,
    '22023', 'unknown stage "latest"', 'an unknown stage');
SELECT throws_ok($$SELECT keysmith.get_secret_version('sr/app', '00000000-0000-4000-8000-000000000000')$$,
    '42704', 'secret "sr/app" has no version 00000000-0000-4000-8000-000000000000', 'an unknown version id');
SELECT is(keysmith.get_secret('sr/app', 'pending'), NULL, 'no pending version: NULL');
SELECT is((SELECT count(*) FROM information_schema.columns
            WHERE table_schema = 'keysmith' AND table_name IN ('secrets', 'secret_versions', 'rotations', 'secret_grants')
              AND column_name IN ('ciphertext', 'value', 'password', 'pending_verifier')), 0::bigint,
    'no view has a value column');

-- privileges
SET ROLE sr_user;
SELECT throws_ok($$SELECT keysmith.grant_secret('sr/app', 'sr_reader', 'write')$$,
    '22023', 'unknown secret privilege "write"', 'an unknown privilege');
SELECT throws_ok($$SELECT keysmith.grant_secret('sr/app', 'sr_nobody', 'read')$$,
    '42704', 'role "sr_nobody" does not exist', 'a grant to a missing role');
SELECT keysmith.grant_secret('sr/app', 'sr_reader', 'rotate');
SELECT keysmith.grant_secret('sr/app', 'sr_nokey', 'read');
RESET ROLE;
SET ROLE sr_reader;
SELECT throws_ok($$SELECT keysmith.put_secret_value('sr/app', '{"username": "sr_target", "password": "p4ssw0rd-long-enough"}')$$,
    '42501', 'permission denied for secret "sr/app"', 'rotate is not enough to override a role secret by hand');
SELECT throws_ok($$SELECT keysmith.grant_secret('sr/app', 'sr_reader', 'admin')$$,
    '42501', 'permission denied for secret "sr/app"', 'no admin: no grants, not even to oneself');
RESET ROLE;
SET ROLE sr_nokey;
SELECT throws_ok($$SELECT keysmith.get_secret('sr/app')$$,
    '42501', 'permission denied to decrypt with key "sr_key"', 'read on the secret without decrypt on its key');
RESET ROLE;

-- rotations
SELECT throws_ok($$SELECT keysmith.rotate_secret('sr/api')$$,
    '22023', 'secret "sr/api" has strategy none and is not rotated by keysmith', 'rotating a secret of strategy none');
SELECT is(keysmith.rotate_secret('sr/app', '22222222-2222-4222-8222-222222222222'),
          '22222222-2222-4222-8222-222222222222'::uuid, 'rotate_secret with a token returns it');
SELECT is(keysmith.rotate_secret('sr/app', '22222222-2222-4222-8222-222222222222'),
          '22222222-2222-4222-8222-222222222222'::uuid, 'the same token again: the same rotation');
SELECT throws_ok($$SELECT keysmith.rotate_secret('sr/app', '33333333-3333-4333-8333-333333333333')$$,
    'KS014', 'a rotation of secret "sr/app" is already in flight', 'another token while one is in flight');
SELECT throws_ok($$SELECT keysmith.put_secret_value('sr/app', 'x')$$,
    'KS014', 'a rotation of secret "sr/app" is in flight', 'put_secret_value while a rotation is in flight');
SELECT throws_ok($$SELECT keysmith.drop_secret('sr/app')$$,
    'KS014', 'a rotation of secret "sr/app" is in flight', 'drop_secret while a rotation is in flight');
SELECT lives_ok($$SELECT keysmith.cancel_rotation('sr/app')$$, 'cancel_rotation');
SELECT throws_ok($$SELECT keysmith.cancel_rotation('sr/app')$$,
    '55000', 'no rotation of secret "sr/app" is in flight', 'nothing left to cancel');

-- the creator loses ADMIN OPTION: its secret can no longer rotate the role
REVOKE sr_target FROM sr_user;
SELECT throws_ok($$SELECT keysmith.rotate_secret('sr/app')$$,
    '42501', 'permission denied to set the password of role "sr_target"',
    'a rotation acts with its creator''s authority, checked again');
SELECT is((SELECT string_agg(event || ':' || acting_role, ',' ORDER BY event_id) FROM keysmith.rotation_event
            WHERE secret_name = 'sr/app'),
          'created:sr_user,granted:sr_user,granted:sr_user,requested:postgres,cancelled:postgres',
          'the audit trail names the roles that acted, not the table owner');
SELECT * FROM finish();
ROLLBACK;
