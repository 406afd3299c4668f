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

-- Re-encryption's lock (docs/security.md, "Known gaps" until 0.10).  Up to
-- 0.9, reencrypt and scheduled re-encryption took the advisory lock
-- (19283, table OID), which any login role could take first with
-- pg_advisory_lock and hold, so that the table's re-encryption failed
-- "already running" at every retry.  From 0.10 it is an advisory lock tag
-- no SQL function can ask for (its last field is 3; pg_advisory_lock's is
-- 1 or 2), taken only by keysmith._reencrypt_lock, for a role that may
-- UPDATE the table.  A run that 0.9 started and still holds the old lock
-- is not seen by 0.10's (update between runs).
CREATE FUNCTION keysmith._reencrypt_lock(tbl regclass)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_reencrypt_lock'
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION keysmith._reencrypt_unlock(tbl regclass)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_reencrypt_unlock'
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION keysmith._reencrypt_lock(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._reencrypt_unlock(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_lock(regclass) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_unlock(regclass) TO keysmith_user, keysmith_admin;

CREATE OR REPLACE FUNCTION keysmith._reencrypt_start(tbl regclass, col name, batch_size integer, pause interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
    estimate bigint;
    done_before bigint := 0;
    resume tid;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF pause IS NULL OR pause < '0'::interval THEN
        RAISE EXCEPTION 'pause must not be negative' USING ERRCODE = '22023';
    END IF;
    PERFORM keysmith._check_bytea_column(tbl, col);
    IF NOT keysmith._reencrypt_lock(tbl) THEN
        RAISE EXCEPTION 'keysmith.reencrypt is already running on %', tbl USING ERRCODE = '55P03';
    END IF;
    SELECT * INTO j FROM keysmith._reencrypt_job_get(tbl, col);
    IF FOUND AND j.state <> 'done' THEN
        done_before := j.rows_done;
        resume := j.resume_after;
    END IF;
    SELECT greatest(c.reltuples, 0)::bigint INTO estimate FROM pg_class c WHERE c.oid = tbl;
    -- the table's rows, of which done_before are done: rows_left is
    -- approximate, and as good as the last ANALYZE
    PERFORM keysmith._reencrypt_job_put(tbl, col, 'running', done_before, greatest(estimate, done_before),
                                        resume, 0, resume IS NOT NULL);
END
$$;

CREATE OR REPLACE FUNCTION keysmith._reencrypt_end(tbl regclass)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT keysmith._reencrypt_unlock(tbl) $$;

CREATE OR REPLACE VIEW keysmith.reencrypt_progress AS
SELECT j.tbl AS table_name,
       j.col AS column_name,
       CASE WHEN j.state OPERATOR(pg_catalog.=) 'running' AND NOT EXISTS (
                 SELECT 1 FROM pg_catalog.pg_locks l
                  WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
                    AND l.classid OPERATOR(pg_catalog.=) 19283
                    AND l.objid OPERATOR(pg_catalog.=) j.tbl::pg_catalog.oid
                    AND l.objsubid OPERATOR(pg_catalog.=) 3)
            THEN 'interrupted' ELSE j.state END AS state,
       j.rows_done,
       GREATEST(j.rows_total OPERATOR(pg_catalog.-) j.rows_done, 0) AS rows_left,
       CASE WHEN j.last_batch_at OPERATOR(pg_catalog.>) j.started_at
            THEN pg_catalog.round((j.rows_done::pg_catalog.numeric OPERATOR(pg_catalog./)
                 pg_catalog.date_part('epoch', j.last_batch_at OPERATOR(pg_catalog.-) j.started_at)::pg_catalog.numeric), 1)
       END AS rows_per_second,
       j.started_at,
       j.last_batch_at,
       j.finished_at
  FROM keysmith.reencrypt_job j;
