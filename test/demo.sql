-- test/demo.sql: what `make demo` shows.  Runs with ON_ERROR_STOP off so the
-- refusals at the end print their errors and the script goes on.
\set VERBOSITY default
\echo '--- install keysmith and create a key (DEK v1, wrapped by the local master key)'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('customers');
SELECT name, kms, current_version, versions FROM keysmith.keys;

\echo '--- encrypt values; the context binds a value to its row'
CREATE TABLE customer (id int PRIMARY KEY, name text, card bytea);
INSERT INTO customer
SELECT i, 'customer ' || i,
       keysmith.encrypt_value('customers', '4111-1111-1111-' || lpad(i::text, 4, '0'), 'customer:' || i)
  FROM generate_series(1, 5) AS i;
SELECT id, name, left(encode(card, 'hex'), 40) || '...' AS card_ciphertext,
       octet_length(card) AS bytes FROM customer ORDER BY id;

\echo '--- decrypt with the right context'
SELECT id, keysmith.decrypt_value(card, 'customer:' || id) AS card FROM customer ORDER BY id;

\echo '--- what a ciphertext says about itself (no decryption)'
SELECT key_name, key_version, algorithm, format_version, plaintext_length
  FROM keysmith.ciphertext_info((SELECT card FROM customer WHERE id = 1));

\echo '--- refused: a value decrypted under another row''s context'
SELECT keysmith.decrypt_value(card, 'customer:2') FROM customer WHERE id = 1;

\echo '--- refused: one flipped bit'
SELECT keysmith.decrypt_value(set_byte(card, 30, get_byte(card, 30) # 1), 'customer:1')
  FROM customer WHERE id = 1;

\echo '--- leased roles: a template, then a short-lived login role from it'
CREATE ROLE demo_readers NOLOGIN;
GRANT SELECT ON customer TO demo_readers;
SELECT keysmith.create_role_template('reporting', ARRAY['demo_readers'], '2 seconds', '1 hour');
SELECT username, length(password) AS password_length, expires_at - now() AS ttl
  FROM keysmith.issue_role('reporting');
SELECT template, state, open_sessions FROM keysmith.leases;

\echo '--- refused: a TTL beyond the template''s max_ttl'
SELECT * FROM keysmith.issue_role('reporting', '2 hours');

\echo '--- three seconds later the reaper has revoked it and dropped the role'
SELECT pg_sleep(3.5);
SELECT template, state, revoke_reason, revoked_at - expires AS lag FROM keysmith.leases;
SELECT count(*) AS leased_roles_left FROM pg_roles WHERE rolname LIKE 'ks\_reporting\_%';

\echo '--- credential rotation: keysmith keeps demo_app''s password and rotates it'
CREATE ROLE demo_app LOGIN;
GRANT SELECT ON customer TO demo_app;
SELECT keysmith.create_key('creds');
SELECT keysmith.create_secret('db/demo_app', 'creds', 'postgres_role', '{"role": "demo_app"}') AS first_version;
SELECT keysmith.get_secret('db/demo_app')::jsonb->>'password' AS old_password \gset
SELECT name, strategy, state FROM keysmith.secrets;

\echo '--- rotate it: create, set, test (a login over TCP that used the new password), finish'
SELECT keysmith.rotate_secret('db/demo_app') AS token \gset
SELECT pg_sleep(1);
SELECT secret, state, attempts, last_error FROM keysmith.rotations WHERE token = :'token';
SELECT event, detail FROM keysmith.rotation_event WHERE token = :'token' ORDER BY event_id;

\echo '--- the old credential is now previous, the new one current'
SELECT s.stage, keysmith.get_secret('db/demo_app', s.stage)::jsonb->>'username' AS username,
       keysmith.get_secret('db/demo_app', s.stage)::jsonb->>'password' AS password
  FROM unnest(ARRAY['previous', 'current']) AS s(stage);
SELECT keysmith.get_secret('db/demo_app', 'previous')::jsonb->>'password' = :'old_password' AS previous_is_the_old_one;

\echo '--- refused: a rotation with another token while one is in flight, shown with a held transaction'
BEGIN;
SELECT keysmith.rotate_secret('db/demo_app', '11111111-1111-4111-8111-111111111111') IS NOT NULL AS started;
SELECT keysmith.rotate_secret('db/demo_app');
ROLLBACK;
