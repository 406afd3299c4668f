-- test/pgtap/keys_lifecycle.sql: DEK and KEK rotation, automatic rollover,
-- rewrap, retire/restore, destroy (crypto-shredding), the views and the
-- audit trail, with every refusal's SQLSTATE pinned.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(52);

SELECT keysmith.create_key('lc');
CREATE TEMP TABLE v AS SELECT 1 AS ver, keysmith.encrypt_value('lc', 'under one', 'c1') AS c;

-- DEK rotation
SELECT is(keysmith.rotate_dek('lc'), 2, 'rotate_dek returns the new version');
INSERT INTO v SELECT 2, keysmith.encrypt_value('lc', 'under two', 'c2');
SELECT is((keysmith.ciphertext_info(c)).key_version, 2::bigint, 'new values use the new version') FROM v WHERE ver = 2;
SELECT is(keysmith.decrypt_value(c, 'c1'), 'under one', 'old values still decrypt') FROM v WHERE ver = 1;
SELECT is(keysmith.rotate_dek('lc'), 3, 'a second rotation gives version 3');
SELECT is((SELECT current_version FROM keysmith.keys WHERE name = 'lc'), 3, 'keys view shows the current version');
SELECT is((SELECT versions FROM keysmith.keys WHERE name = 'lc'), 3::bigint, 'keys view counts versions');
SELECT ok((SELECT rotated_at IS NOT NULL FROM keysmith.keys WHERE name = 'lc'), 'keys view shows when it rotated');

-- rewrap
SELECT is((keysmith.ciphertext_info(keysmith.rewrap_value(c, 'c1'))).key_version, 3::bigint, 'rewrap_value moves a value to the current version') FROM v WHERE ver = 1;
SELECT is(keysmith.decrypt_value(keysmith.rewrap_value(c, 'c1'), 'c1'), 'under one', 'the rewrapped value decrypts to the same plaintext') FROM v WHERE ver = 1;
SELECT throws_ok($$SELECT keysmith.rewrap_value(c, 'wrong') FROM v WHERE ver = 1$$, 'KS003', 'ciphertext authentication failed', 'rewrap checks the context');
SELECT is(keysmith.rewrap_value(c, 'c3'), c, 'a value already current comes back unchanged')
  FROM (SELECT keysmith.encrypt_value('lc', 'x', 'c3') AS c) s;
SELECT ok(keysmith.ciphertext_needs_reencrypt(c), 'an old version needs re-encryption') FROM v WHERE ver = 1;
SELECT ok(NOT keysmith.ciphertext_needs_reencrypt(keysmith.encrypt_value('lc', 'x')), 'a current one does not');

-- retire / restore
SELECT lives_ok($$SELECT keysmith.retire_key_version('lc', 1)$$, 'retire version 1');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c, 'c1') FROM v WHERE ver = 1$$, 'KS009',
    'version 1 of key "lc" is retired', 'decrypting a retired version is refused');
SELECT is(keysmith.decrypt_value(keysmith.rewrap_value(c, 'c1'), 'c1'), 'under one', 'a retired version can still be re-encrypted') FROM v WHERE ver = 1;
SELECT throws_ok($$SELECT keysmith.retire_key_version('lc', 3)$$, '55000',
    'cannot retire version 3 of key "lc": it is the current version', 'the current version cannot be retired');
SELECT lives_ok($$SELECT keysmith.restore_key_version('lc', 1)$$, 'restore version 1');
SELECT is(keysmith.decrypt_value(c, 'c1'), 'under one', 'a restored version decrypts again') FROM v WHERE ver = 1;
SELECT throws_ok($$SELECT keysmith.retire_key_version('lc', 9)$$, 'KS004', 'key "lc" has no version 9', 'unknown version');
SELECT throws_ok($$SELECT keysmith.rotate_dek('nope')$$, '42704', 'key "nope" does not exist', 'unknown key');

-- destroy a version
SELECT throws_ok($$SELECT keysmith.destroy_key_version('lc', 3)$$, '55000',
    'cannot destroy version 3 of key "lc": it is the current version', 'the current version cannot be destroyed');
SELECT lives_ok($$SELECT keysmith.destroy_key_version('lc', 1)$$, 'destroy version 1');
SELECT is((SELECT wrapped_dek FROM keysmith.key_version WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'lc') AND version = 1),
    NULL, 'the wrapped DEK is erased');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c, 'c1') FROM v WHERE ver = 1$$, 'KS010',
    'version 1 of key "lc" has been destroyed', 'values under a destroyed version are unrecoverable');
SELECT throws_ok($$SELECT keysmith.rewrap_value(c, 'c1') FROM v WHERE ver = 1$$, 'KS010', 'version 1 of key "lc" has been destroyed', 'and cannot be re-encrypted');
SELECT throws_ok($$SELECT keysmith.restore_key_version('lc', 1)$$, 'KS010', 'version 1 of key "lc" has been destroyed', 'destruction cannot be undone');
SELECT ok(NOT keysmith.ciphertext_needs_reencrypt(c), 'destroyed versions are not re-encryption candidates') FROM v WHERE ver = 1;
SELECT is(keysmith.decrypt_value(c, 'c2'), 'under two', 'other versions are untouched') FROM v WHERE ver = 2;
SELECT is((SELECT destroyed_versions FROM keysmith.keys WHERE name = 'lc'), 1::bigint, 'keys view counts destroyed versions');

-- KEK rotation on a scratch copy of a master key file
SELECT set_config('keysmith.local_master_key_file', 'fixtures/rotate.key', true);
SELECT keysmith.create_key('lc_kek');
CREATE TEMP TABLE kv AS SELECT keysmith.encrypt_value('lc_kek', 'kek test') AS c;
SELECT keysmith.rotate_dek('lc_kek');
CREATE TEMP TABLE before AS SELECT version, wrapped_dek_versions FROM keysmith.local_master_keys();
SELECT is(keysmith.add_local_master_key(), 2, 'add_local_master_key appends version 2');
SELECT is((SELECT count(*)::int FROM keysmith.local_master_keys() WHERE in_file), 2, 'the file now has two versions');
SELECT is((SELECT wrapped_dek_versions FROM keysmith.local_master_keys() WHERE version = 2), 0::bigint, 'nothing is under the new master key yet');
SELECT is(keysmith.rotate_kek('lc_kek'), 2, 'rotate_kek re-wraps both versions');
SELECT is((SELECT wrapped_dek_versions FROM keysmith.local_master_keys() WHERE version = 2), 2::bigint, 'both DEK versions are now under master key 2');
SELECT is((SELECT b.wrapped_dek_versions - m.wrapped_dek_versions FROM keysmith.local_master_keys() m JOIN before b USING (version) WHERE version = 1),
    2::bigint, 'and two fewer under master key 1');
SELECT is(keysmith.rotate_kek('lc_kek'), 0, 'rotate_kek again has nothing to do');
SELECT keysmith.flush_dek_cache();
SELECT is(keysmith.decrypt_value(c), 'kek test', 'values decrypt through the re-wrapped DEK') FROM kv;
SELECT set_config('keysmith.local_master_key_file', 'keysmith_master.key', true);

-- automatic rollover
SELECT keysmith.create_key('lc_roll');
SET LOCAL keysmith.max_encryptions_per_dek = 5;
CREATE TEMP TABLE r AS SELECT i, keysmith.encrypt_value('lc_roll', 'r' || i) AS c FROM generate_series(1, 12) i;
SELECT is(array_agg(DISTINCT (keysmith.ciphertext_info(c)).key_version ORDER BY (keysmith.ciphertext_info(c)).key_version),
    ARRAY[1, 2, 3]::bigint[], 'twelve encryptions with a limit of five use three versions') FROM r;
SELECT is((SELECT count(*)::int FROM r GROUP BY (keysmith.ciphertext_info(c)).key_version ORDER BY 1 DESC LIMIT 1), 5,
    'no version encrypted more than five');
SELECT is((SELECT count(*)::int FROM keysmith.key_event WHERE key_name = 'lc_roll' AND event = 'rollover'), 2, 'each rollover is audited');
SELECT is((SELECT count(*)::int FROM r WHERE keysmith.decrypt_value(c) = 'r' || i), 12, 'every value decrypts');
SELECT is((SELECT encryptions FROM keysmith.key_versions WHERE key_name = 'lc_roll' AND version = 1), 5::bigint, 'the shared counter shows five for version 1');
RESET keysmith.max_encryptions_per_dek;

-- destroy the whole key
SELECT is(keysmith.destroy_key('lc'), 2, 'destroy_key erases the remaining two versions');
SELECT throws_ok($$SELECT keysmith.encrypt_value('lc', 'x')$$, 'KS010', 'key "lc" has been destroyed', 'a destroyed key does not encrypt');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c, 'c2') FROM v WHERE ver = 2$$, 'KS010', 'version 2 of key "lc" has been destroyed', 'nor decrypt');
SELECT throws_ok($$SELECT keysmith.destroy_key('lc')$$, 'KS010', 'key "lc" has been destroyed', 'destroying twice is refused');
SELECT throws_ok($$SELECT keysmith.rotate_dek('lc')$$, 'KS010', 'key "lc" has been destroyed', 'a destroyed key does not rotate');
SELECT is((SELECT state FROM keysmith.keys WHERE name = 'lc'), 'destroyed', 'keys view shows the destroyed state');

-- the audit trail
SELECT is((SELECT array_agg(event ORDER BY event_id) FROM keysmith.key_event WHERE key_name = 'lc'),
    ARRAY['create', 'rotate_dek', 'rotate_dek', 'retire', 'restore', 'destroy', 'destroy'],
    'every lifecycle event of the key is audited in order');
SELECT is((SELECT acting_role FROM keysmith.key_event WHERE key_name = 'lc' AND event = 'create'), current_user::name, 'with who did it');
SELECT ok((SELECT bool_and(detail IS NULL OR detail !~ '[0-9a-f]{32}') FROM keysmith.key_event), 'and no key material');

SELECT * FROM finish();
ROLLBACK;
