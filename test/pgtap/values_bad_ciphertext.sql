-- test/pgtap/values_bad_ciphertext.sql: every damaged ciphertext is refused with
-- its own SQLSTATE and a message that names no secret.
-- keysmith-test-database: keysmith_tap
BEGIN;
SELECT plan(20);

SELECT keysmith.create_key('tap_bad');
SELECT keysmith.create_key('tap_bad_other');
CREATE TEMP TABLE ct AS
SELECT keysmith.encrypt_value('tap_bad', 'attack at dawn', 'ctx') AS c,
       keysmith.encrypt_value('tap_bad', 'no context') AS n,
       keysmith.encrypt_value('tap_bad_other', 'attack at dusk', 'ctx') AS o;

SELECT throws_ok($$SELECT keysmith.decrypt_value(''::bytea)$$,
    '22P03', 'ciphertext is empty', 'empty bytea');
SELECT throws_ok($$SELECT keysmith.decrypt_value(substr(c, 1, 37), 'ctx') FROM ct$$,
    '22P03', 'ciphertext is 37 bytes, shorter than the minimum of 38', 'truncated below the minimum');
SELECT throws_ok($$SELECT keysmith.decrypt_value(substr(c, 1, octet_length(c) - 1), 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'truncated by one byte');
SELECT throws_ok($$SELECT keysmith.decrypt_value(set_byte(c, 0, 2), 'ctx') FROM ct$$,
    'KS001', 'unsupported ciphertext format version 2', 'wrong format version');
SELECT throws_ok($$SELECT keysmith.decrypt_value(set_byte(c, 1, 9), 'ctx') FROM ct$$,
    'KS002', 'unsupported ciphertext algorithm id 9', 'unknown algorithm');
SELECT throws_ok($$SELECT keysmith.decrypt_value(overlay(c placing '\x7ffffff0'::bytea from 3 for 4), 'ctx') FROM ct$$,
    '42704', 'ciphertext refers to key id 2147483632, which does not exist in this database', 'unknown key');
SELECT throws_ok($$SELECT keysmith.decrypt_value(overlay(c placing '\x00000063'::bytea from 7 for 4), 'ctx') FROM ct$$,
    'KS004', 'key "tap_bad" has no version 99', 'unknown key version');
SELECT throws_ok($$SELECT keysmith.decrypt_value(set_byte(c, 12, get_byte(c, 12) # 4), 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'flipped bit in the nonce');
SELECT throws_ok($$SELECT keysmith.decrypt_value(set_byte(c, 25, get_byte(c, 25) # 1), 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'flipped bit in the body');
SELECT throws_ok($$SELECT keysmith.decrypt_value(set_byte(c, octet_length(c) - 1, get_byte(c, octet_length(c) - 1) # 128), 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'flipped bit in the tag');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c, 'other') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'wrong context');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c) FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'missing context');
SELECT throws_ok($$SELECT keysmith.decrypt_value(n, 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'unexpected context');
SELECT throws_ok($$SELECT keysmith.decrypt_value(n, '') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'empty context is not the same as none');
SELECT throws_ok($$SELECT keysmith.decrypt_value(substr(o, 1, 10) || substr(c, 11), 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'header of another key spliced onto a body');
SELECT throws_ok($$SELECT keysmith.decrypt_value(c || '\x00'::bytea, 'ctx') FROM ct$$,
    'KS003', 'ciphertext authentication failed', 'trailing bytes');
SELECT throws_ok($$SELECT keysmith.decrypt_value(keysmith.encrypt_value('tap_bad', '\xc3'::bytea))$$,
    '22021', 'decrypted value is not valid in encoding "UTF8"', 'decrypting invalid UTF-8 to text');

-- every single-bit flip of a whole ciphertext is refused, none decrypts
CREATE FUNCTION pg_temp.flips_that_decrypt(c bytea, context text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer := 0;
BEGIN
    FOR i IN 0 .. octet_length(c) - 1 LOOP
        FOR b IN 0 .. 7 LOOP
            BEGIN
                PERFORM keysmith.decrypt_value(set_byte(c, i, get_byte(c, i) # (1 << b)), context);
                n := n + 1;
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
SELECT is(pg_temp.flips_that_decrypt(c, 'ctx'), 0, 'no flipped bit anywhere yields a plaintext') FROM ct;

-- the refused inputs did not crash or poison the backend
SELECT is(keysmith.decrypt_value(c, 'ctx'), 'attack at dawn', 'the untouched value still decrypts') FROM ct;
SELECT is(keysmith.decrypt_value(o, 'ctx'), 'attack at dusk', 'so does the other key''s') FROM ct;

SELECT * FROM finish();
ROLLBACK;
