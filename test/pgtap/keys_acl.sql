-- test/pgtap/keys_acl.sql: per-key privileges (encrypt, decrypt, admin),
-- their defaults, grant/revoke, and that checks follow changes at once.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(22);

SELECT keysmith.create_key('acl_k');
CREATE ROLE acl_app LOGIN IN ROLE keysmith_user;
CREATE ROLE acl_reader LOGIN;
GRANT keysmith_user TO acl_reader;
CREATE ROLE acl_dba LOGIN IN ROLE keysmith_admin;
CREATE ROLE acl_outsider LOGIN;
CREATE TEMP TABLE v AS SELECT keysmith.encrypt_value('acl_k', 'guarded') AS c;
GRANT SELECT ON v TO acl_app, acl_reader, acl_dba, acl_outsider;

SELECT bag_eq($$SELECT grantee::text, privilege FROM keysmith.key_grants WHERE key_name = 'acl_k'$$,
    $$VALUES ('keysmith_user', 'encrypt'), ('keysmith_user', 'decrypt'), ('keysmith_admin', 'admin')$$,
    'default grants: encrypt and decrypt to keysmith_user, admin to keysmith_admin');

-- narrow decrypt to one role
SELECT lives_ok($$SELECT keysmith.revoke_key('acl_k', 'keysmith_user', 'decrypt')$$, 'revoke decrypt from keysmith_user');
SELECT lives_ok($$SELECT keysmith.grant_key('acl_k', 'acl_reader', 'decrypt')$$, 'grant decrypt to acl_reader');

SET LOCAL ROLE acl_app;
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM v$$, '42501',
    'permission denied to decrypt with key "acl_k"', 'acl_app may no longer decrypt');
SELECT lives_ok($$SELECT keysmith.encrypt_value('acl_k', 'x')$$, 'but still encrypts');
SELECT throws_ok($$SELECT keysmith.rewrap_value(c) FROM v$$, '42501', 'permission denied to decrypt with key "acl_k"', 'rewrap needs the per-key decrypt too');
SELECT throws_ok($$SELECT keysmith.rotate_dek('acl_k')$$, '42501', 'permission denied for function rotate_dek', 'keysmith_user cannot even call rotate_dek (EXECUTE privilege)');
RESET ROLE;

SET LOCAL ROLE acl_reader;
SELECT is(keysmith.decrypt_value(c), 'guarded', 'acl_reader decrypts') FROM v;
RESET ROLE;

SELECT lives_ok($$SELECT keysmith.revoke_key('acl_k', 'acl_reader', 'decrypt')$$, 'revoke it again');
SET LOCAL ROLE acl_reader;
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM v$$, '42501', 'permission denied to decrypt with key "acl_k"', 'the revoke takes effect at once, cache or not');
RESET ROLE;

-- admin; acl_dba may call decrypt_value too, so the per-key ACL decides
GRANT keysmith_user TO acl_dba;
SET LOCAL ROLE acl_dba;
SELECT is(keysmith.rotate_dek('acl_k'), 2, 'keysmith_admin rotates by default');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM v$$, '42501', 'permission denied to decrypt with key "acl_k"', 'the per-key admin privilege does not imply decrypt');
SELECT lives_ok($$SELECT keysmith.grant_key('acl_k', 'acl_app', 'decrypt')$$, 'an admin grants');
RESET ROLE;
SET LOCAL ROLE acl_app;
SELECT is(keysmith.decrypt_value(c), 'guarded', 'the grant takes effect at once') FROM v;
RESET ROLE;

SELECT lives_ok($$SELECT keysmith.revoke_key('acl_k', 'keysmith_admin', 'admin')$$, 'revoke admin from keysmith_admin');
SET LOCAL ROLE acl_dba;
SELECT throws_ok($$SELECT keysmith.rotate_dek('acl_k')$$, '42501', 'permission denied to administer key "acl_k"',
    'keysmith_admin membership alone is not enough once admin is revoked');
RESET ROLE;

-- membership changes are seen at once
REVOKE keysmith_user FROM acl_reader;
SELECT lives_ok($$SELECT keysmith.grant_key('acl_k', 'keysmith_user', 'decrypt')$$, 'give keysmith_user decrypt back');
SET LOCAL ROLE acl_reader;
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM v$$, '42501', 'permission denied for schema keysmith', 'a role that left keysmith_user cannot call decrypt');
RESET ROLE;

-- bad grants
SELECT throws_ok($$SELECT keysmith.grant_key('acl_k', 'acl_app', 'superpower')$$, '22023', 'unknown key privilege "superpower"', 'unknown privilege');
SELECT throws_ok($$SELECT keysmith.grant_key('acl_k', 'no_such_role', 'decrypt')$$, '42704', 'role "no_such_role" does not exist', 'unknown role');
SELECT throws_ok($$SELECT keysmith.grant_key('no_such_key', 'acl_app', 'decrypt')$$, '42704', 'key "no_such_key" does not exist', 'unknown key');
SELECT is((SELECT count(*)::int FROM keysmith.key_event WHERE key_name = 'acl_k' AND event IN ('grant', 'revoke')), 6, 'grants and revokes are audited');

SELECT * FROM finish();
ROLLBACK;
