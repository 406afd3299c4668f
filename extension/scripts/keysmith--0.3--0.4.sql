-- extension/keysmith--0.3--0.4.sql
--
-- keysmith 0.4: credential rotation (docs/credential-rotation.md).
--   * secrets: values kept envelope-encrypted under a keysmith key, in
--     versions carrying the staging labels current, pending and previous;
--   * per-secret privileges read, rotate and admin;
--   * rotations: a create / set / test / finish state machine that the
--     rotation worker (rotator/rotation.c) drives, with its audit trail.
-- The full 0.4 install script is the 0.3 one followed by this file (the
-- Makefile builds it).  Every table here is written only by keysmith's C
-- functions, as the extension owner; no view shows a value.

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.4'" to load this file. \quit

-- A stored secret.  owner_role is the role that created it: rotations act
-- with its privileges (on the key, on the target role), never more.
CREATE TABLE keysmith.secret (
    name            text PRIMARY KEY
                    CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9_.:/@-]{1,128}$'),
    key_name        text NOT NULL REFERENCES keysmith.key (name),
    strategy        text NOT NULL
                    CHECK (strategy OPERATOR(pg_catalog.=) ANY (ARRAY['none', 'postgres_role', 'postgres_role_pair'])),
    options         jsonb NOT NULL DEFAULT '{}',
    owner_role      regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_rotated_at timestamptz,
    next_due_at     timestamptz
);

-- Versions.  ciphertext is encrypt_value(key_name, value, context) with the
-- context 'keysmith secret:<name>:<version_id>'.  username is the role a
-- credential is for (not secret; the pair strategy reads it).  Each label
-- is on at most one version of a secret.
CREATE TABLE keysmith.secret_version (
    version_id   uuid PRIMARY KEY,
    secret_name  text NOT NULL REFERENCES keysmith.secret (name) ON DELETE CASCADE,
    ciphertext   bytea NOT NULL,
    stage        text CHECK (stage OPERATOR(pg_catalog.=) ANY (ARRAY['current', 'pending', 'previous'])),
    username     name,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    created_by   name NOT NULL,
    UNIQUE (secret_name, stage)
);
CREATE INDEX secret_version_secret_idx ON keysmith.secret_version (secret_name, created_at);

CREATE TABLE keysmith.secret_acl (
    secret_name text NOT NULL REFERENCES keysmith.secret (name) ON DELETE CASCADE,
    grantee     regrole NOT NULL,
    privilege   text NOT NULL
                CHECK (privilege OPERATOR(pg_catalog.=) ANY (ARRAY['read', 'rotate', 'admin'])),
    granted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (secret_name, grantee, privilege)
);

-- One row per rotation, keyed by its idempotency token.  state is the
-- step to run next (create, set, test, finish) or how it ended.
-- pending_verifier is the SCRAM verifier that set installs (the same
-- text pg_authid holds); it lets set see that it already ran, and is
-- cleared when the rotation ends.
CREATE TABLE keysmith.rotation (
    token            uuid PRIMARY KEY,
    secret_name      text NOT NULL REFERENCES keysmith.secret (name) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'create'
                     CHECK (state OPERATOR(pg_catalog.=) ANY
                            (ARRAY['create', 'set', 'test', 'finish', 'finished', 'failed', 'cancelled'])),
    target_role      name,
    pending_version  uuid,
    pending_verifier text,
    requested_by     name NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    started_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at      timestamptz,
    CHECK ((state OPERATOR(pg_catalog.=) ANY (ARRAY['finished', 'failed', 'cancelled']))
           OPERATOR(pg_catalog.=) (finished_at IS NOT NULL))
);
-- At most one rotation in flight per secret; the worker's queue.
CREATE UNIQUE INDEX rotation_in_flight_idx ON keysmith.rotation (secret_name)
    WHERE state OPERATOR(pg_catalog.=) ANY (ARRAY['create', 'set', 'test', 'finish']);
CREATE INDEX rotation_secret_idx ON keysmith.rotation (secret_name, started_at);

-- The audit trail: it outlives the secret (no foreign key).
CREATE SEQUENCE keysmith.rotation_event_id_seq;
CREATE TABLE keysmith.rotation_event (
    event_id     bigint PRIMARY KEY DEFAULT pg_catalog.nextval('keysmith.rotation_event_id_seq'),
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    secret_name  text NOT NULL,
    token        uuid,
    version_id   uuid,
    event        text NOT NULL,
    acting_role  name NOT NULL,
    detail       text
);
ALTER SEQUENCE keysmith.rotation_event_id_seq OWNED BY keysmith.rotation_event.event_id;
CREATE INDEX rotation_event_secret_idx ON keysmith.rotation_event (secret_name, at);

SELECT pg_catalog.pg_extension_config_dump('keysmith.secret', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.secret_version', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.secret_acl', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.rotation', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.rotation_event', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.rotation_event_id_seq', '');

REVOKE ALL ON keysmith.secret, keysmith.secret_version, keysmith.secret_acl,
              keysmith.rotation, keysmith.rotation_event FROM PUBLIC;
REVOKE ALL ON SEQUENCE keysmith.rotation_event_id_seq FROM PUBLIC;

-- Functions: C, running as their caller; the tables are reached as their
-- owner inside (as the key functions do).  search_path is pinned anyway.

CREATE FUNCTION keysmith.create_secret(name text, key_name text, strategy text DEFAULT 'none',
    options jsonb DEFAULT '{}', value text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'keysmith_create_secret'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.put_secret_value(name text, value text)
RETURNS uuid
AS 'MODULE_PATHNAME', 'keysmith_put_secret_value'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.get_secret(name text, stage text DEFAULT 'current')
RETURNS text
AS 'MODULE_PATHNAME', 'keysmith_get_secret'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.get_secret_version(name text, version_id uuid)
RETURNS text
AS 'MODULE_PATHNAME', 'keysmith_get_secret_version'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.drop_secret(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_drop_secret'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.grant_secret(name text, role name, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_grant_secret'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.revoke_secret(name text, role name, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_revoke_secret'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.rotate_secret(name text, token uuid DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'keysmith_rotate_secret'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.cancel_rotation(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_cancel_rotation'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

-- Which secrets the querying role may see: keysmith admins all, anyone
-- else those it holds a privilege on.
CREATE FUNCTION keysmith._secret_visible(secret_name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_secret_visible'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.create_secret(text, text, text, jsonb, text) IS
    'store a secret under a keysmith key; strategies none, postgres_role, postgres_role_pair; returns the first version id';
COMMENT ON FUNCTION keysmith.put_secret_value(text, text) IS
    'store a new current version of a secret; returns its version id';
COMMENT ON FUNCTION keysmith.get_secret(text, text) IS
    'the value of the version carrying a label (current, pending, previous), or NULL';
COMMENT ON FUNCTION keysmith.rotate_secret(text, uuid) IS
    'start a rotation (create, set, test, finish, run by the rotation worker); returns its idempotency token';

-- Views (no values) -----------------------------------------------------------

CREATE VIEW keysmith.secrets WITH (security_barrier) AS
SELECT s.name, s.key_name AS key, s.strategy, s.owner_role,
       (SELECT v.version_id FROM keysmith.secret_version v
         WHERE v.secret_name OPERATOR(pg_catalog.=) s.name
           AND v.stage OPERATOR(pg_catalog.=) 'current') AS current_version,
       s.last_rotated_at AS last_rotated,
       s.next_due_at AS next_due,
       CASE WHEN r.state IS NULL THEN 'ok'
            WHEN r.state OPERATOR(pg_catalog.=) ANY (ARRAY['create', 'set', 'test', 'finish']) THEN 'rotating'
            WHEN r.state OPERATOR(pg_catalog.=) 'failed' THEN 'rotation_failed'
            ELSE 'ok' END AS state,
       s.created_at
  FROM keysmith.secret s
  LEFT JOIN LATERAL (SELECT r.state FROM keysmith.rotation r
                      WHERE r.secret_name OPERATOR(pg_catalog.=) s.name
                      ORDER BY r.started_at DESC LIMIT 1) r ON true
 WHERE keysmith._secret_visible(s.name);

CREATE VIEW keysmith.secret_versions WITH (security_barrier) AS
SELECT v.secret_name AS name, v.version_id,
       CASE WHEN v.stage IS NULL THEN '{}'::pg_catalog.text[] ELSE ARRAY[v.stage] END AS stages,
       v.username, v.created_at AS created, v.created_by
  FROM keysmith.secret_version v
 WHERE keysmith._secret_visible(v.secret_name);

CREATE VIEW keysmith.rotations WITH (security_barrier) AS
SELECT r.secret_name AS secret, r.token, r.state, r.target_role, r.pending_version,
       r.requested_by, r.attempts, r.last_error, r.next_attempt_at,
       r.started_at, r.finished_at
  FROM keysmith.rotation r
 WHERE keysmith._secret_visible(r.secret_name);

CREATE VIEW keysmith.secret_grants WITH (security_barrier) AS
SELECT a.secret_name AS name, a.grantee, a.privilege, a.granted_at
  FROM keysmith.secret_acl a
 WHERE keysmith._secret_visible(a.secret_name);

REVOKE ALL ON FUNCTION keysmith.create_secret(text, text, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.put_secret_value(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.get_secret(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.get_secret_version(text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.drop_secret(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.grant_secret(text, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.revoke_secret(text, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.rotate_secret(text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.cancel_rotation(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._secret_visible(text) FROM PUBLIC;
REVOKE ALL ON keysmith.secrets, keysmith.secret_versions, keysmith.rotations, keysmith.secret_grants FROM PUBLIC;

GRANT EXECUTE ON FUNCTION keysmith.create_secret(text, text, text, jsonb, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.put_secret_value(text, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.get_secret(text, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.get_secret_version(text, uuid) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.drop_secret(text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.grant_secret(text, name, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.revoke_secret(text, name, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.rotate_secret(text, uuid) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.cancel_rotation(text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._secret_visible(text) TO keysmith_user, keysmith_admin;
GRANT SELECT ON keysmith.secrets, keysmith.secret_versions, keysmith.rotations, keysmith.secret_grants
    TO keysmith_user, keysmith_admin;
GRANT SELECT ON keysmith.rotation_event TO keysmith_admin;
