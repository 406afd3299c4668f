-- test/pgtap/keys_dek_cache.sql: the per-backend DEK cache evicts by second
-- chance (the clock over the entries in load order: a use only marks its
-- entry; a load, and the fetch again after a privilege check, are no use),
-- for decryption and for encryption, which keeps what is used and evicts
-- what was loaded and not used since; a key name's entry that points at an
-- evicted DEK entry, whose memory another key took, is not taken for it;
-- and a key rolled over inside one statement is read back by the cold path
-- (read-your-own-writes of key_scan.c's snapshot).
--
-- How eviction is seen: a cached version needs no KMS, an evicted one must
-- be unwrapped again.  With the master key file made unreachable for the
-- rest of the transaction, a hit still works and a miss fails with 58P01.
-- A FIFO cache (a use that gives no second chance, or a load that does)
-- evicts version 1 instead of 2 and fails the first checks.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(10);

SELECT keysmith.create_key('tap_lru_' || i) FROM generate_series(1, 4) i;
CREATE TEMP TABLE lru AS
SELECT i, keysmith.encrypt_value('tap_lru_' || i, 'value ' || i) AS c FROM generate_series(1, 4) i;

-- the value of ciphertext i, or the SQLSTATE it failed with
CREATE FUNCTION pg_temp.dec(n int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT keysmith.decrypt_value(c) FROM lru WHERE i = n);
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR ' || SQLSTATE;
END $$;
-- the key version encrypt_value used for key n, or the SQLSTATE
CREATE FUNCTION pg_temp.enc(n int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (keysmith.ciphertext_info(keysmith.encrypt_value('tap_lru_' || n, 'x'))).key_version::text;
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR ' || SQLSTATE;
END $$;

-- decryption: load 1 and 2, use 1 again, load 3: 2 is the least recently used
SELECT keysmith.flush_dek_cache();
SET LOCAL keysmith.dek_cache_size = 2;
SELECT pg_temp.dec(1);
SELECT pg_temp.dec(2);
SELECT pg_temp.dec(1);
SELECT pg_temp.dec(3);
SET LOCAL keysmith.local_master_key_file = 'no-such-dir/missing.key';
SELECT is(pg_temp.dec(1), 'value 1', 'decrypt: the version used before the last load stays cached');
SELECT is(pg_temp.dec(3), 'value 3', 'decrypt: the version loaded last stays cached');
SELECT is(pg_temp.dec(2), 'ERROR 58P01', 'decrypt: the least recently used version was evicted (its unwrap needs the key file)');
RESET keysmith.local_master_key_file;

-- encryption, through the key names: the same order
SELECT keysmith.flush_dek_cache();
SELECT pg_temp.enc(1);
SELECT pg_temp.enc(2);
SELECT pg_temp.enc(1);
SELECT pg_temp.enc(3);
SET LOCAL keysmith.local_master_key_file = 'no-such-dir/missing.key';
SELECT is(pg_temp.enc(1), '1', 'encrypt: the key used before the last load stays cached');
SELECT is(pg_temp.enc(3), '1', 'encrypt: the key loaded last stays cached');
SELECT is(pg_temp.enc(2), 'ERROR 58P01', 'encrypt: the least recently used key was evicted');
RESET keysmith.local_master_key_file;

-- a smaller size evicts down to it at the next load
SELECT keysmith.flush_dek_cache();
SET LOCAL keysmith.dek_cache_size = 3;
SELECT pg_temp.dec(1);
SELECT pg_temp.dec(2);
SELECT pg_temp.dec(3);
SET LOCAL keysmith.dek_cache_size = 1;
SELECT pg_temp.dec(4);
SELECT is(keysmith.flush_dek_cache(), 1, 'after keysmith.dek_cache_size was lowered, the next load evicts down to it');

-- a name points at its DEK entry; with one entry, key 2's load reuses the
-- memory key 1's entry had: encrypting under key 1's name again must load
-- key 1, not take key 2's DEK that now sits where the name points
SELECT keysmith.flush_dek_cache();
SET LOCAL keysmith.dek_cache_size = 1;
SELECT pg_temp.enc(1);
SELECT pg_temp.enc(2);
SELECT is((keysmith.ciphertext_info(keysmith.encrypt_value('tap_lru_1', 'x'))).key_id,
          (SELECT key_id::bigint FROM keysmith.key WHERE name = 'tap_lru_1'),
          'a name whose DEK entry was evicted and its memory reused loads its own key again');
RESET keysmith.dek_cache_size;

-- read-your-own-writes: one version per encryption, each rollover made and
-- read back inside the one statement (without the command counter advanced
-- before the read, the key is seen on its old version, which is full, and
-- encrypt_value gives up after three rollovers)
SET LOCAL keysmith.max_encryptions_per_dek = 1;
SELECT keysmith.create_key('tap_ryow');
SELECT results_eq(
    $$SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('tap_ryow', 'v' || i))).key_version
        FROM generate_series(1, 4) i$$,
    $$VALUES (1::bigint), (2), (3), (4)$$,
    'a rollover inside a statement is read back at once: each encryption on a new version');
SELECT is((SELECT current_version FROM keysmith.keys WHERE name = 'tap_ryow'), 4,
          'the key''s current version is the last one used');

SELECT * FROM finish();
ROLLBACK;
