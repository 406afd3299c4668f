-- test/pgtap/kms_providers.sql: KMS providers as catalog rows.
-- The attacks first: a keysmith admin (no superuser) tries to create a
-- provider whose option makes the server read a file of its choosing, and
-- to repoint one.  Then every refusal with its SQLSTATE, and a key under a
-- provider of its own, with a master key file of its own, through
-- encrypt, decrypt, rotate_kek and a changed file.  Rolled back.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(45);

CREATE ROLE kp_admin NOLOGIN IN ROLE keysmith_admin;

-- attacks by a keysmith admin who is no superuser
SET ROLE kp_admin;
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp_evil', 'local', '{"master_key_file": "/etc/ssl/private/ssl-cert-snakeoil.key"}')$$,
    '42501', 'must be superuser to create a KMS provider',
    'a keysmith admin may not make the server read a file of its choosing');
SELECT throws_ok($$SELECT keysmith.alter_kms_provider('local', '{"master_key_file": "/etc/passwd"}')$$,
    '42501', 'must be superuser to alter a KMS provider', 'nor repoint a provider');
SELECT throws_ok($$SELECT keysmith.drop_kms_provider('local')$$,
    '42501', 'must be superuser to drop a KMS provider', 'nor drop one');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM keysmith.kms_provider WHERE name = 'kp_evil'), 0, 'nothing was created');

-- arguments and options
SELECT throws_ok($$SELECT keysmith.create_kms_provider(NULL, 'local')$$,
    '22004', 'name must not be null', 'a NULL name');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp', NULL)$$,
    '22004', 'type must not be null', 'a NULL type');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp one', 'local')$$,
    '42602', 'invalid KMS provider name', 'a name with a space');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp', 'nonesuch_kms', '{"region": "eu-west-1"}')$$,
    '22023', 'unknown KMS type "nonesuch_kms"', 'a type this build does not provide');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp', 'local', '[]')$$,
    '22023', 'KMS provider options must be a JSON object', 'options that are not an object');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp', 'local', '{"master_key_file": 1}')$$,
    '22023', 'KMS provider option "master_key_file" must be a string', 'an option that is not a string');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp', 'local', '{"url": "https://x"}')$$,
    '22023', 'unknown option "url" for KMS type local', 'an option the type does not know');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('kp', 'local', '{"master_key_file": ""}')$$,
    '22023', 'option master_key_file must not be empty', 'an empty file name');
SELECT throws_ok($$SELECT keysmith.create_kms_provider('local', 'local')$$,
    '42710', 'KMS provider "local" already exists', 'a name that exists');

SELECT lives_ok($$SELECT keysmith.create_kms_provider('kp_tenant', 'local', '{"master_key_file": "fixtures/tenant.key"}')$$,
                'a superuser creates a provider with a master key file of its own');
SELECT is((SELECT type || ' ' || keys FROM keysmith.kms_providers WHERE name = 'kp_tenant'), 'local 0',
          'kms_providers shows it, with no keys yet');

-- keys name their provider
SELECT throws_ok($$SELECT keysmith.create_key('kp_k0', 'kp_nope')$$,
    '42704', 'KMS provider "kp_nope" does not exist', 'a key under a missing provider');
SELECT throws_ok($$SELECT keysmith.create_key('kp_k0', 'kp_tenant', 'transit-key')$$,
    '22023', 'a key of KMS type local takes no kms_key: its KEK is the newest master key of the file',
    'a kms_key the provider does not take');
SELECT throws_ok($$SELECT keysmith.create_key('kp_k0', NULL)$$,
    '22004', 'kms must not be null', 'a NULL provider');
SELECT is((SELECT count(*)::int FROM keysmith.key WHERE name = 'kp_k0'), 0, 'refused keys leave nothing behind');

SELECT lives_ok($$SELECT keysmith.create_key('kp_k', 'kp_tenant')$$, 'a key under the provider');
SELECT is((SELECT kms || ' ' || kek_version FROM keysmith.key_versions v JOIN keysmith.keys k ON k.name = v.key_name
            WHERE v.key_name = 'kp_k'), 'kp_tenant 1', 'its DEK is wrapped under master key 1 of its own file');
CREATE TEMP TABLE kp_v AS SELECT keysmith.encrypt_value('kp_k', 'tenant secret') AS c;
SELECT is(keysmith.decrypt_value(c), 'tenant secret', 'and round-trips') FROM kp_v;

-- the provider's file gains master key 2: rotate_kek moves the DEK there,
-- as the provider says it must
SELECT lives_ok($$SELECT keysmith.alter_kms_provider('kp_tenant', '{"master_key_file": "fixtures/tenant-v2.key"}')$$,
                'a superuser points the provider at the file with master key 2');
SELECT is(keysmith.rotate_kek('kp_k'), 1, 'rotate_kek re-wraps the one version');
SELECT is(keysmith.rotate_kek('kp_k'), 0, 'and has nothing left to do');
SELECT is((SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'kp_k'), '2',
          'the KEK version is text, as the provider names it');
SELECT keysmith.flush_dek_cache();
SELECT is(keysmith.decrypt_value(c), 'tenant secret', 'the value decrypts through the re-wrapped DEK') FROM kp_v;

-- repointed at another file, the key no longer unwraps
SELECT lives_ok($$SELECT keysmith.alter_kms_provider('kp_tenant', '{"master_key_file": "fixtures/tenant-other.key"}')$$,
                'a superuser repoints the provider at a file without master key 2');
SELECT keysmith.flush_dek_cache();
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM kp_v$$,
    'KS007', 'master key version 2 is not in the master key file', 'and its keys fail to unwrap there, clearly');

SELECT throws_ok($$SELECT keysmith.drop_kms_provider('kp_tenant')$$,
    '2BP01', 'KMS provider "kp_tenant" is used by 1 key(s)', 'a provider in use cannot be dropped');
SELECT throws_ok($$SELECT keysmith.drop_kms_provider('local')$$,
    '55000', 'the built-in KMS provider "local" cannot be dropped', 'the built-in one neither');
SELECT throws_ok($$SELECT keysmith.alter_kms_provider('kp_nope', '{}')$$,
    '42704', 'KMS provider "kp_nope" does not exist', 'altering a missing provider');


-- migrate_key moves a key between providers without touching a value
CREATE ROLE kp_user NOLOGIN IN ROLE keysmith_user;
SET ROLE kp_user;
SELECT throws_ok($$SELECT keysmith.migrate_key('kp_k', 'local')$$,
    '42501', 'permission denied for function migrate_key', 'attack: an application role may not move a key');
RESET ROLE;
SELECT throws_ok($$SELECT keysmith.migrate_key('kp_k', 'local')$$,
    'KS007', 'master key version 2 is not in the master key file',
    'a key its provider cannot unwrap cannot move');
SELECT is((SELECT kms FROM keysmith.keys WHERE name = 'kp_k'), 'kp_tenant', 'and stays where it was');
SELECT lives_ok($$SELECT keysmith.alter_kms_provider('kp_tenant', '{"master_key_file": "fixtures/tenant-v2.key"}')$$,
                'the provider reads its file again');
SELECT throws_ok($$SELECT keysmith.migrate_key('kp_k', 'kp_nope')$$,
    '42704', 'KMS provider "kp_nope" does not exist', 'to a provider that does not exist');
SELECT throws_ok($$SELECT keysmith.migrate_key('kp_k', 'local', 'transit-key')$$,
    '22023', 'a key of KMS type local takes no kms_key: its KEK is the newest master key of the file',
    'with a kms_key the target does not take');
SELECT throws_ok($$SELECT keysmith.migrate_key('kp_k', NULL)$$,
    '22004', 'to_provider must not be null', 'a NULL target');
SELECT is(keysmith.migrate_key('kp_k', 'kp_tenant'), 0, 'to where it already is: nothing to do');
SELECT is(keysmith.migrate_key('kp_k', 'local'), 1, 'to the built-in provider: its one version moves');
SELECT is((SELECT kms FROM keysmith.keys WHERE name = 'kp_k'), 'local', 'the key now names local');
SELECT keysmith.flush_dek_cache();
SELECT is(keysmith.decrypt_value(c), 'tenant secret', 'the value decrypts through the moved DEK') FROM kp_v;
SELECT is((SELECT detail FROM keysmith.key_event WHERE key_name = 'kp_k' AND event = 'migrate'),
          '1 version(s) moved from kp_tenant to local', 'the move is audited');
SELECT lives_ok($$SELECT keysmith.drop_kms_provider('kp_tenant')$$, 'and the old provider, unused now, can go');

SELECT * FROM finish();
ROLLBACK;
