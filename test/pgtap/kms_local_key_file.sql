-- test/pgtap/kms_local_key_file.sql: the local master key file is refused
-- when missing, unreadable, malformed, of the wrong length, with loose
-- permissions, or not holding the KEK a DEK was wrapped with.  Fixtures are
-- made by test/run_suites.sh in the data directory's fixtures/ folder.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(19);

SELECT keysmith.create_key('tap_mk');
CREATE TEMP TABLE v AS SELECT keysmith.encrypt_value('tap_mk', 'kept safe') AS c;

-- create_key needs the KMS to wrap; decrypt needs it after a cache flush
CREATE FUNCTION pg_temp.mk_case(file text, code text, msg text, what text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('keysmith.local_master_key_file', file, true);
    RETURN NEXT throws_ok(format('SELECT keysmith.create_key(%L)', 'tap_mk_' || md5(file)), code, msg,
                          'create_key: ' || what);
    PERFORM keysmith.flush_dek_cache();
    RETURN NEXT throws_ok('SELECT keysmith.decrypt_value(c) FROM v', code, msg,
                          'decrypt after cache flush: ' || what);
    PERFORM set_config('keysmith.local_master_key_file', 'keysmith_master.key', true);
END $$;

SELECT pg_temp.mk_case('fixtures/missing.key', '58P01',
    'master key file "fixtures/missing.key" does not exist', 'missing file');
SELECT pg_temp.mk_case('fixtures/unreadable.key', '58030',
    'could not open master key file "fixtures/unreadable.key": Permission denied', 'unreadable file');
SELECT pg_temp.mk_case('fixtures/directory.key', '58030',
    'master key file "fixtures/directory.key" is not a regular file', 'a directory');
SELECT pg_temp.mk_case('fixtures/malformed.key', 'F0000',
    'master key file "fixtures/malformed.key" is malformed: line 1: key contains a character that is not a hex digit',
    'malformed file');
SELECT pg_temp.mk_case('fixtures/short.key', 'F0000',
    'master key file "fixtures/short.key" is malformed: line 1: key is 16 hex characters long, expected 64 (256 bits)',
    'wrong key length');
SELECT pg_temp.mk_case('fixtures/empty.key', 'F0000',
    'master key file "fixtures/empty.key" is malformed: the file contains no keys', 'no keys');
SELECT pg_temp.mk_case('fixtures/loose.key', 'KS006',
    'master key file "fixtures/loose.key" has mode 0644; group and others must have no access (use 0600)',
    'loose permissions');

-- valid files that do not hold the KEK: only decrypt fails
SELECT set_config('keysmith.local_master_key_file', 'fixtures/only-v2.key', true);
SELECT keysmith.flush_dek_cache();
SELECT throws_ok('SELECT keysmith.decrypt_value(c) FROM v', 'KS007',
    'master key version 1 is not in the master key file', 'the wrapping master key version is gone');
SELECT set_config('keysmith.local_master_key_file', 'fixtures/other.key', true);
SELECT keysmith.flush_dek_cache();
SELECT throws_ok('SELECT keysmith.decrypt_value(c) FROM v', 'KS008',
    'wrapped data key does not authenticate under master key version 1', 'a different master key');
SELECT set_config('keysmith.local_master_key_file', 'keysmith_master.key', true);

-- nothing was written by the failed create_key calls, and data is intact
SELECT is((SELECT count(*)::int FROM keysmith.key WHERE name LIKE 'tap\_mk\_%'), 0, 'failed create_key wrote nothing');
SELECT keysmith.flush_dek_cache();
SELECT is(keysmith.decrypt_value(c), 'kept safe', 'with the right file everything decrypts again') FROM v;

-- a cached DEK keeps working while the file is broken (one unwrap per version per backend)
SELECT set_config('keysmith.local_master_key_file', 'fixtures/missing.key', true);
SELECT is(keysmith.decrypt_value(c), 'kept safe', 'a cached DEK needs no KMS call') FROM v;
SELECT set_config('keysmith.local_master_key_file', 'keysmith_master.key', true);

SELECT * FROM finish();
ROLLBACK;
