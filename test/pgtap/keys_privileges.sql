-- test/pgtap/keys_privileges.sql: who may call what, and refusals of bad
-- names and duplicates.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(17);

SELECT keysmith.create_key('tap_priv');
CREATE ROLE tap_app LOGIN IN ROLE keysmith_user;
CREATE ROLE tap_dba LOGIN IN ROLE keysmith_admin;
CREATE ROLE tap_nobody LOGIN;
CREATE TEMP TABLE v AS SELECT keysmith.encrypt_value('tap_priv', 'for app') AS c;
GRANT SELECT ON v TO tap_app, tap_nobody, tap_dba;

SELECT throws_ok($$SELECT keysmith.create_key('tap_priv')$$, '42710', 'key "tap_priv" already exists', 'duplicate key');
SELECT throws_ok($$SELECT keysmith.create_key('bad name')$$, '22023',
    'key name contains a character other than letters, digits and _ - . : / @', 'space in key name');
SELECT throws_ok($$SELECT keysmith.create_key('a"; DROP TABLE x; --')$$, '22023', 'key name contains a character other than letters, digits and _ - . : / @', 'hostile key name');
SELECT throws_ok($$SELECT keysmith.create_key('')$$, '22023', 'key name must be 1 to 128 characters long', 'empty key name');
SELECT throws_ok($$SELECT keysmith.create_key(repeat('k', 129))$$, '22023', 'key name must be 1 to 128 characters long', 'long key name');
SELECT throws_ok($$SELECT keysmith.create_key('x', 'nosuchkms')$$, '42704', 'KMS provider "nosuchkms" does not exist', 'unknown KMS provider');
SELECT throws_ok($$SELECT keysmith.encrypt_value('no_such_key', 'x')$$, '42704', 'key "no_such_key" does not exist', 'unknown key name');

SET LOCAL ROLE tap_app;
SELECT keysmith.flush_dek_cache();  -- the next decrypt unwraps as tap_app
SELECT is(keysmith.decrypt_value(c), 'for app', 'keysmith_user decrypts') FROM v;
SELECT lives_ok($$SELECT keysmith.encrypt_value('tap_priv', 'x')$$, 'keysmith_user encrypts');
SELECT throws_ok($$SELECT keysmith.create_key('tap_app_key')$$, '42501', 'permission denied for function create_key', 'keysmith_user cannot create keys');
SELECT throws_ok($$SELECT * FROM keysmith.key_version$$, '42501', 'permission denied for table key_version', 'keysmith_user cannot read wrapped keys');
SELECT throws_ok($$SELECT * FROM keysmith.keys$$, '42501', 'permission denied for view keys', 'keysmith_user cannot list keys');
RESET ROLE;

SET LOCAL ROLE tap_nobody;
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM v$$, '42501', 'permission denied for schema keysmith', 'PUBLIC cannot decrypt');
SELECT throws_ok($$SELECT keysmith.encrypt_value('tap_priv', 'x')$$, '42501', 'permission denied for schema keysmith', 'PUBLIC cannot encrypt');
RESET ROLE;

SET LOCAL ROLE tap_dba;
SELECT lives_ok($$SELECT keysmith.create_key('tap_dba_key')$$, 'keysmith_admin creates keys');
SELECT is((SELECT current_version FROM keysmith.keys WHERE name = 'tap_dba_key'), 1, 'keysmith_admin lists keys');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM v$$, '42501', 'permission denied for function decrypt_value', 'keysmith_admin does not decrypt (separation of duties)');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
