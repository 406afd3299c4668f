-- extension/keysmith--0.5--0.6.sql
--
-- keysmith 0.6: schedules (docs/credential-rotation.md, "Schedules").
--   * schedule_rotation: a secret rotates once per period, at a start time
--     spread within a window, optionally shredding its previous version
--     some time after each rotation;
--   * schedule_key_rotation: a key gets a new DEK version once per period,
--     and the columns registered for it (register_column) are re-encrypted
--     by the rotation worker with the existing resumable reencrypt, as the
--     role that registered each column;
--   * the view rotation_schedules shows both kinds, with the next due time
--     and the last result.
-- A period is served at most once: the run that serves it is recorded in
-- the same transaction as its effect (the rotation row, the new DEK
-- version).  A server that was down over several periods serves only the
-- latest, once, when it comes back.
-- The full 0.6 install script is the 0.5 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.6'" to load this file. \quit

-- One row per schedule: of a secret (secret_name) or of a key (key_name).
-- Period k begins at starting + k * every; its run is due spread_offset
-- later, an offset within the window chosen from the target's name, so
-- that many schedules with the same period do not fire in the same second.
-- last_period is the last period served (at first, the one before the
-- first period due: a start in the past serves only the latest period
-- begun, and the earlier ones do not count as missed).  owner_role scheduled it: the
-- runs act with its privileges, checked again at every run.
CREATE SEQUENCE keysmith.schedule_id_seq;
CREATE TABLE keysmith.schedule (
    schedule_id    bigint PRIMARY KEY DEFAULT pg_catalog.nextval('keysmith.schedule_id_seq'),
    secret_name    text UNIQUE REFERENCES keysmith.secret (name) ON DELETE CASCADE,
    key_name       text UNIQUE REFERENCES keysmith.key (name) ON DELETE CASCADE,
    every          interval NOT NULL CHECK (every OPERATOR(pg_catalog.>=) '1 second'::pg_catalog.interval),
    spread         interval NOT NULL DEFAULT '0'
                   CHECK (spread OPERATOR(pg_catalog.>=) '0'::pg_catalog.interval),
    spread_offset  interval NOT NULL DEFAULT '0',
    starting       timestamptz NOT NULL,
    reencrypt      boolean NOT NULL DEFAULT false,
    destroy_previous_after interval
                   CHECK (destroy_previous_after OPERATOR(pg_catalog.>=) '0'::pg_catalog.interval),
    owner_role     regrole NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_period    bigint,
    next_due_at    timestamptz NOT NULL,
    last_run_at    timestamptz,
    last_result    text,
    last_token     uuid,
    CHECK (pg_catalog.num_nonnulls(secret_name, key_name) OPERATOR(pg_catalog.=) 1)
);
ALTER SEQUENCE keysmith.schedule_id_seq OWNED BY keysmith.schedule.schedule_id;

-- Every period served, with what serving it did: the audit of schedules,
-- and the proof that no period is served twice (the primary key).  A
-- schedule set again is a new schedule (a new schedule_id), whose periods
-- count from its own start.
CREATE TABLE keysmith.schedule_run (
    schedule_id bigint NOT NULL,
    kind        text NOT NULL CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['secret', 'key'])),
    target      text NOT NULL,
    period      bigint NOT NULL,
    period_start timestamptz NOT NULL,
    ran_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    token       uuid,
    result      text NOT NULL,
    PRIMARY KEY (schedule_id, period)
);
CREATE INDEX schedule_run_target_idx ON keysmith.schedule_run (target, ran_at);

-- Columns holding a key's values.  Scheduled re-encryption runs as
-- registered_by; pending says a DEK rotation left work to do.
CREATE TABLE keysmith.encrypted_column (
    tbl             regclass NOT NULL,
    col             name NOT NULL,
    key_name        text NOT NULL REFERENCES keysmith.key (name) ON DELETE CASCADE,
    context_expr    text,
    registered_by   regrole NOT NULL,
    registered_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    pending         boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    last_done_at    timestamptz,
    last_error      text,
    PRIMARY KEY (tbl, col)
);
CREATE INDEX encrypted_column_key_idx ON keysmith.encrypted_column (key_name);

SELECT pg_catalog.pg_extension_config_dump('keysmith.schedule', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.schedule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.schedule_run', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.encrypted_column', '');
REVOKE ALL ON keysmith.schedule, keysmith.schedule_run, keysmith.encrypted_column FROM PUBLIC;
REVOKE ALL ON SEQUENCE keysmith.schedule_id_seq FROM PUBLIC;

-- 0.4 reserved secret.next_due_at; the schedule holds it now.
CREATE OR REPLACE VIEW keysmith.secrets WITH (security_barrier) AS
SELECT s.name, s.key_name AS key, s.strategy, s.owner_role,
       (SELECT v.version_id FROM keysmith.secret_version v
         WHERE v.secret_name OPERATOR(pg_catalog.=) s.name
           AND v.stage OPERATOR(pg_catalog.=) 'current') AS current_version,
       s.last_rotated_at AS last_rotated,
       (SELECT sc.next_due_at FROM keysmith.schedule sc
         WHERE sc.secret_name OPERATOR(pg_catalog.=) s.name) AS next_due,
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
ALTER TABLE keysmith.secret DROP COLUMN next_due_at;

-- The latest period of a schedule whose run is due at or before at, or -1.
-- Intervals with months have no fixed length, so the estimate from the
-- epoch is corrected by stepping.
CREATE FUNCTION keysmith._schedule_period(starting timestamptz, every interval, spread_offset interval,
                                          at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k bigint;
BEGIN
    IF at < starting + spread_offset THEN
        RETURN -1;
    END IF;
    k := floor(extract(epoch FROM at - starting - spread_offset) / extract(epoch FROM every))::bigint;
    k := greatest(k, 0);
    WHILE k > 0 AND starting + every * k + spread_offset > at LOOP
        k := k - 1;
    END LOOP;
    WHILE starting + every * (k + 1) + spread_offset <= at LOOP
        k := k + 1;
    END LOOP;
    RETURN k;
END
$$;

CREATE FUNCTION keysmith.schedule_rotation(secret text, every interval, "window" interval DEFAULT NULL,
    starting timestamptz DEFAULT pg_catalog.now(), options jsonb DEFAULT '{}')
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'keysmith_schedule_rotation'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.unschedule_rotation(secret text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_unschedule_rotation'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.schedule_key_rotation(key_name text, every interval, reencrypt boolean DEFAULT true,
    "window" interval DEFAULT NULL, starting timestamptz DEFAULT pg_catalog.now())
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'keysmith_schedule_key_rotation'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.unschedule_key_rotation(key_name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_unschedule_key_rotation'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.register_column(tbl regclass, col name, key_name text, context_expr text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_register_column'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.unregister_column(tbl regclass, col name)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_unregister_column'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.schedule_rotation(text, interval, interval, timestamptz, jsonb) IS
    'rotate a secret once every period, at a time spread within window; options destroy_previous_after; returns the next due time';
COMMENT ON FUNCTION keysmith.schedule_key_rotation(text, interval, boolean, interval, timestamptz) IS
    'rotate_dek once every period, then re-encrypt the columns registered for the key; returns the next due time';
COMMENT ON FUNCTION keysmith.register_column(regclass, name, text, text) IS
    'declare that a column holds values under a key, for scheduled re-encryption as the registering role';

-- Schedules of secrets the querying role may see, and of every key.
CREATE VIEW keysmith.rotation_schedules WITH (security_barrier) AS
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
       sc.owner_role
  FROM keysmith.schedule sc
 WHERE sc.key_name IS NOT NULL OR keysmith._secret_visible(sc.secret_name);

-- Registered columns the querying role may see: those of tables it can
-- read (keysmith admins: all).
CREATE VIEW keysmith.encrypted_columns WITH (security_barrier) AS
SELECT c.tbl, c.col, c.key_name AS key, c.context_expr, c.registered_by, c.registered_at,
       c.pending AS reencrypt_pending, c.last_done_at, c.attempts, c.last_error
  FROM keysmith.encrypted_column c
 WHERE pg_catalog.has_table_privilege(c.tbl, 'SELECT')
    OR pg_catalog.pg_has_role('keysmith_admin', 'USAGE');

REVOKE ALL ON FUNCTION keysmith._schedule_period(timestamptz, interval, interval, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.schedule_rotation(text, interval, interval, timestamptz, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.unschedule_rotation(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.schedule_key_rotation(text, interval, boolean, interval, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.unschedule_key_rotation(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.register_column(regclass, name, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.unregister_column(regclass, name) FROM PUBLIC;
REVOKE ALL ON keysmith.rotation_schedules, keysmith.encrypted_columns FROM PUBLIC;

GRANT EXECUTE ON FUNCTION keysmith.schedule_rotation(text, interval, interval, timestamptz, jsonb)
    TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.unschedule_rotation(text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.schedule_key_rotation(text, interval, boolean, interval, timestamptz)
    TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.unschedule_key_rotation(text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.register_column(regclass, name, text, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.unregister_column(regclass, name) TO keysmith_user, keysmith_admin;
GRANT SELECT ON keysmith.rotation_schedules, keysmith.encrypted_columns TO keysmith_user, keysmith_admin;
GRANT SELECT ON keysmith.schedule_run TO keysmith_admin;
