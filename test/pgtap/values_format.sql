-- test/pgtap/values_format.sql: the envelope API behaves as documented.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(24);

SELECT has_schema('keysmith');
SELECT has_function('keysmith', 'create_key', ARRAY['text', 'text', 'text', 'text']);
SELECT has_function('keysmith', 'encrypt_value', ARRAY['text', 'text', 'text']);
SELECT has_function('keysmith', 'encrypt_value', ARRAY['text', 'bytea', 'text']);
SELECT has_function('keysmith', 'decrypt_value', ARRAY['bytea', 'text']);
SELECT has_function('keysmith', 'decrypt_value_bytea', ARRAY['bytea', 'text']);
SELECT has_function('keysmith', 'ciphertext_info', ARRAY['bytea']);
SELECT has_role('keysmith_user');
SELECT has_role('keysmith_admin');

SELECT lives_ok($$SELECT keysmith.create_key('tap_values')$$, 'create_key works');
SELECT is(keysmith.decrypt_value(keysmith.encrypt_value('tap_values', 'secret')), 'secret', 'text round trip');
SELECT is(keysmith.decrypt_value_bytea(keysmith.encrypt_value('tap_values', '\x000102'::bytea)), '\x000102'::bytea, 'bytea round trip');
SELECT is(keysmith.decrypt_value(keysmith.encrypt_value('tap_values', '')), '', 'empty string round trip');
SELECT is(keysmith.decrypt_value(keysmith.encrypt_value('tap_values', 's', 'ctx'), 'ctx'), 's', 'round trip with context');
SELECT is(octet_length(keysmith.encrypt_value('tap_values', 'abc')), 3 + 38, 'overhead is 38 bytes');
SELECT is(get_byte(keysmith.encrypt_value('tap_values', 'abc'), 0), 1, 'format version byte is 1');
SELECT is(get_byte(keysmith.encrypt_value('tap_values', 'abc'), 1), 1, 'algorithm byte is 1 (AES-256-GCM)');
SELECT is((keysmith.ciphertext_info(keysmith.encrypt_value('tap_values', 'abc'))).key_name, 'tap_values', 'info names the key');
SELECT is((keysmith.ciphertext_info(keysmith.encrypt_value('tap_values', 'abc'))).key_version, 1::bigint, 'info gives the version');
SELECT is((keysmith.ciphertext_info(keysmith.encrypt_value('tap_values', 'abc'))).algorithm, 'aes-256-gcm', 'info gives the algorithm');
SELECT is((keysmith.ciphertext_info(keysmith.encrypt_value('tap_values', 'abc'))).plaintext_length, 3::bigint, 'info gives the plaintext length');
SELECT ok(keysmith.encrypt_value('tap_values', 'same') <> keysmith.encrypt_value('tap_values', 'same'), 'random nonces: equal plaintexts give different ciphertexts');
SELECT is(keysmith.decrypt_value(NULL), NULL, 'NULL in, NULL out');
-- wrapped keys are stored only wrapped: no stored value equals a plaintext DEK length
SELECT is((SELECT octet_length(wrapped_dek) FROM keysmith.key_version v JOIN keysmith.key k USING (key_id)
            WHERE k.name = 'tap_values'), 65, 'the stored DEK is the 65-byte local wrap, not a raw key');

SELECT * FROM finish();
ROLLBACK;
