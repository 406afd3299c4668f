-- extension/keysmith--0.9--0.10.sql
--
-- keysmith 0.10: trust, second round (docs/security.md).  Code a secret's
-- or a column's owner supplies runs in a process of its own, as that
-- owner, under deadlines keysmith sets; the catalog changes that go with
-- it are below, one section per change.
-- The full 0.10 install script is the 0.9 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.10'" to load this file. \quit

-- Rotation notifications (docs/credential-rotation.md, "The application
-- side").  Up to 0.9, every finish sent NOTIFY keysmith_rotation with the
-- secret's name and version: any login role, a leased one too, could
-- LISTEN and learn every secret's name.  From 0.10 nothing is sent on
-- that channel.  Each secret has a channel of its own, named
-- keysmith_rotation_ and 32 hex digits of a random uuid (122 random bits;
-- 50 characters, under NAMEDATALEN): no role can guess it, and
-- secret_channel() tells it only to roles that may read the secret.
-- Existing secrets get theirs here, each its own (a volatile default is
-- evaluated per row).  The default is the one place channels are made:
-- every rotation finish and put_secret_value (after a payload that names
-- nothing, {"event": "rotated"}, on the old one) and every revoke_secret
-- of read set a new one with it, so a role that lost read some other way
-- (a membership revoked) hears at most one more nameless notification.
ALTER TABLE keysmith.secret ADD COLUMN notify_channel text NOT NULL
    DEFAULT 'keysmith_rotation_' OPERATOR(pg_catalog.||)
            pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-', '');
ALTER TABLE keysmith.secret ADD CONSTRAINT secret_notify_channel_key UNIQUE (notify_channel);

CREATE FUNCTION keysmith.secret_channel(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'keysmith_secret_channel'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.secret_channel(text) IS
    'the channel to LISTEN on for the secret''s next version (it moves at every new version: ask again after each notification); needs read on the secret';
REVOKE ALL ON FUNCTION keysmith.secret_channel(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.secret_channel(text) TO keysmith_user, keysmith_admin;

-- Schedules check their creator's privileges at every run, shredding
-- included (destroy_previous_after needs admin on the secret at each
-- shredding).  A refused shredding is checked again at every round of the
-- rotation worker; shred_error says why it is refused (NULL: it is not),
-- and rotation_schedules shows it.
ALTER TABLE keysmith.schedule ADD COLUMN shred_error text;

CREATE OR REPLACE VIEW keysmith.rotation_schedules WITH (security_barrier) AS
SELECT CASE WHEN sc.secret_name IS NOT NULL THEN 'secret' ELSE 'key' END AS kind,
       coalesce(sc.secret_name, sc.key_name) AS target,
       sc.every, sc.spread AS "window", sc.starting,
       sc.next_due_at AS next_due,
       sc.last_run_at,
       sc.last_result,
       CASE WHEN sc.secret_name IS NOT NULL THEN
           (SELECT r.state FROM keysmith.rotation r WHERE r.token OPERATOR(pg_catalog.=) sc.last_token)
       ELSE
           (SELECT CASE WHEN pg_catalog.bool_or(c.last_error IS NOT NULL AND c.pending) THEN 'reencrypt_failing'
                        WHEN pg_catalog.bool_or(c.pending) THEN 'reencrypting'
                        ELSE 'done' END
              FROM keysmith.encrypted_column c WHERE c.key_name OPERATOR(pg_catalog.=) sc.key_name)
       END AS last_state,
       sc.reencrypt,
       sc.destroy_previous_after,
       sc.owner_role,
       sc.shred_error
  FROM keysmith.schedule sc
 WHERE sc.key_name IS NOT NULL OR keysmith._secret_visible(sc.secret_name);

-- Big secret values (issue 20, finding 2).  A version's ciphertext is
-- random bytes, which pglz cannot compress; it tried anyway on every value
-- stored out of line, at about 35 MB/s (1.1 s of a 50 MB put_secret_value).
-- Stored uncompressed from now on; rows already stored stay as they are.
ALTER TABLE keysmith.secret_version ALTER COLUMN ciphertext SET STORAGE EXTERNAL;
