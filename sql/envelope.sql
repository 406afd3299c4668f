-- envelope: round trips, NULLs, context, sizes, info, and the ciphertext
-- layout (38 bytes of overhead).
SELECT keysmith.create_key('regress');
SELECT name, kms, current_version, versions FROM keysmith.keys ORDER BY name;

-- round trips, text and bytea
SELECT keysmith.decrypt_value(keysmith.encrypt_value('regress', 'hello'));
SELECT keysmith.decrypt_value(keysmith.encrypt_value('regress', ''));
SELECT keysmith.decrypt_value(keysmith.encrypt_value('regress', 'grüße, 世界'));
SELECT keysmith.decrypt_value_bytea(keysmith.encrypt_value('regress', '\x00ff10'::bytea));
SELECT keysmith.decrypt_value(keysmith.encrypt_value('regress', 'ctx', 'row:1'), 'row:1');
SELECT keysmith.decrypt_value(keysmith.encrypt_value('regress', 'empty ctx', ''), '');

-- NULL in, NULL out
SELECT keysmith.encrypt_value('regress', NULL::text) IS NULL AS null_pt,
       keysmith.encrypt_value(NULL, 'x') IS NULL AS null_key,
       keysmith.decrypt_value(NULL) IS NULL AS null_ct,
       keysmith.decrypt_value_bytea(NULL) IS NULL AS null_ct_bytea,
       keysmith.ciphertext_info(NULL) IS NULL AS null_info;

-- overhead is 38 bytes; two encryptions of one value differ (random nonce)
SELECT octet_length(keysmith.encrypt_value('regress', 'x')) - 1 AS overhead;
SELECT keysmith.encrypt_value('regress', 'same') <> keysmith.encrypt_value('regress', 'same') AS differs;

-- header layout: version 1, algorithm 1, key id, version 1
SELECT substr(keysmith.encrypt_value('regress', 'x'), 1, 2) AS version_and_algorithm;
SELECT key_name, key_version, algorithm, format_version, plaintext_length, octet_length(nonce) AS nonce_len
  FROM keysmith.ciphertext_info(keysmith.encrypt_value('regress', 'twelve bytes'));

-- a 64 MB value round-trips
SELECT octet_length(c) AS ct_len,
       keysmith.decrypt_value(c) = repeat('abcdefgh', 8 * 1024 * 1024) AS same
  FROM (SELECT keysmith.encrypt_value('regress', repeat('abcdefgh', 8 * 1024 * 1024)) AS c) s;

-- many rows, with per-row context
CREATE TABLE secrets AS
SELECT i AS id, keysmith.encrypt_value('regress', 'value ' || i, 'id:' || i) AS ct
  FROM generate_series(1, 1000) i;
SELECT count(*) FILTER (WHERE keysmith.decrypt_value(ct, 'id:' || id) = 'value ' || id) AS good
  FROM secrets;
DROP TABLE secrets;

-- the cache is per backend; flushing it forces a fresh unwrap, which works
SELECT keysmith.flush_dek_cache() >= 1 AS flushed;
SELECT keysmith.decrypt_value(keysmith.encrypt_value('regress', 'after flush'));

-- a key created in a rolled-back transaction is never used afterwards
BEGIN;
SELECT keysmith.create_key('ephemeral');
SELECT keysmith.decrypt_value(keysmith.encrypt_value('ephemeral', 'gone soon'));
ROLLBACK;
SELECT keysmith.create_key('ephemeral');
SELECT key_name FROM keysmith.ciphertext_info(keysmith.encrypt_value('ephemeral', 'v'));
SELECT keysmith.decrypt_value(keysmith.encrypt_value('ephemeral', 'new key works'));
