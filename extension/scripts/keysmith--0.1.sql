-- extension/keysmith--0.1.sql
--
-- keysmith 0.1: envelope-encrypted values under the local KMS.
-- Key tables are dumped by pg_dump (pg_extension_config_dump) and readable
-- only by their owner; the C functions read them as that owner.

\echo Use "CREATE EXTENSION keysmith" to load this file. \quit

-- Roles are cluster-wide; another database may have created them already.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'keysmith_user') THEN
        CREATE ROLE keysmith_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'keysmith_admin') THEN
        CREATE ROLE keysmith_admin NOLOGIN;
    END IF;
END
$roles$;

CREATE SEQUENCE keysmith.key_id_seq AS integer MINVALUE 1;

CREATE TABLE keysmith.key (
    key_id          integer PRIMARY KEY DEFAULT pg_catalog.nextval('keysmith.key_id_seq'),
    name            text NOT NULL UNIQUE
                    CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9_.:/@-]{1,128}$'),
    kms             text NOT NULL,
    current_version integer NOT NULL CHECK (current_version OPERATOR(pg_catalog.>) 0),
    state           text NOT NULL DEFAULT 'active'
                    CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['active', 'destroyed'])),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    rotated_at      timestamptz,
    destroyed_at    timestamptz
);
ALTER SEQUENCE keysmith.key_id_seq OWNED BY keysmith.key.key_id;

COMMENT ON TABLE keysmith.key IS 'keysmith keys; ids are embedded in ciphertexts and must never change';

CREATE TABLE keysmith.key_version (
    key_id      integer NOT NULL REFERENCES keysmith.key (key_id),
    version     integer NOT NULL CHECK (version OPERATOR(pg_catalog.>) 0),
    wrapped_dek bytea,                  -- NULL once destroyed
    kek_version bigint NOT NULL,
    state       text NOT NULL DEFAULT 'active'
                CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['active', 'retired', 'destroyed'])),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    retired_at  timestamptz,
    destroyed_at timestamptz,
    PRIMARY KEY (key_id, version),
    CHECK ((state OPERATOR(pg_catalog.=) 'destroyed') OPERATOR(pg_catalog.=) (wrapped_dek IS NULL))
);

-- Per-key privileges: encrypt, decrypt, admin.  A role holds a privilege
-- when it is, or inherits from, a grantee.
CREATE TABLE keysmith.key_acl (
    key_id    integer NOT NULL REFERENCES keysmith.key (key_id),
    grantee   regrole NOT NULL,
    privilege text NOT NULL
              CHECK (privilege OPERATOR(pg_catalog.=) ANY (ARRAY['encrypt', 'decrypt', 'admin'])),
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (key_id, grantee, privilege)
);

-- Who did what to which key, and when.
CREATE SEQUENCE keysmith.key_event_id_seq;
CREATE TABLE keysmith.key_event (
    event_id     bigint PRIMARY KEY DEFAULT pg_catalog.nextval('keysmith.key_event_id_seq'),
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    event        text NOT NULL,
    key_id       integer,
    key_name     text,
    key_version  integer,
    session_role name NOT NULL,
    acting_role  name NOT NULL,
    detail       text
);
ALTER SEQUENCE keysmith.key_event_id_seq OWNED BY keysmith.key_event.event_id;

-- Progress of keysmith.reencrypt, one row per table and column.
CREATE TABLE keysmith.reencrypt_job (
    tbl           regclass NOT NULL,
    col           name NOT NULL,
    state         text NOT NULL,
    started_at    timestamptz NOT NULL,
    last_batch_at timestamptz,
    finished_at   timestamptz,
    rows_done     bigint NOT NULL DEFAULT 0,
    rows_total    bigint NOT NULL DEFAULT 0,
    resume_after  tid,
    PRIMARY KEY (tbl, col)
);

COMMENT ON TABLE keysmith.key_version IS 'keysmith data keys, stored only wrapped by the key''s KMS';

SELECT pg_catalog.pg_extension_config_dump('keysmith.key', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_version', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_acl', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_event', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_event_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA keysmith FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA keysmith FROM PUBLIC;
GRANT USAGE ON SCHEMA keysmith TO keysmith_user, keysmith_admin;

-- Key administration ---------------------------------------------------------

CREATE FUNCTION keysmith.create_key(name text, kms text DEFAULT 'local')
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_create_key'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION keysmith.create_key(text, text) IS
    'create a named key with a fresh random DEK (version 1), stored only wrapped by the KMS';

CREATE FUNCTION keysmith.flush_dek_cache()
RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_flush_dek_cache'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION keysmith.flush_dek_cache() IS
    'wipe every unwrapped data key cached by this backend; returns how many were dropped';

-- Values ---------------------------------------------------------------------

CREATE FUNCTION keysmith.encrypt_value(key_name text, plaintext text, context text DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'keysmith_encrypt_value'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION keysmith.encrypt_value(key_name text, plaintext bytea, context text DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'keysmith_encrypt_value'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION keysmith.decrypt_value(ciphertext bytea, context text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'keysmith_decrypt_value'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION keysmith.decrypt_value_bytea(ciphertext bytea, context text DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'keysmith_decrypt_value_bytea'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION keysmith.ciphertext_info(
    ciphertext bytea,
    OUT key_name text,
    OUT key_version bigint,
    OUT algorithm text,
    OUT format_version integer,
    OUT key_id bigint,
    OUT nonce bytea,
    OUT plaintext_length bigint)
AS 'MODULE_PATHNAME', 'keysmith_ciphertext_info'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION keysmith.ciphertext_info(bytea) IS
    'describe a keysmith ciphertext from its header, without decrypting it';

CREATE FUNCTION keysmith.rewrap_value(ciphertext bytea, context text DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'keysmith_rewrap_value'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION keysmith.rewrap_value(bytea, text) IS
    're-encrypt a value under its key''s current version without returning the plaintext';

CREATE FUNCTION keysmith.ciphertext_needs_reencrypt(ciphertext bytea)
RETURNS boolean
AS 'MODULE_PATHNAME', 'keysmith_ciphertext_needs_reencrypt'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

-- Key lifecycle ----------------------------------------------------------------

CREATE FUNCTION keysmith.rotate_dek(key_name text) RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_rotate_dek' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.rotate_kek(key_name text) RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_rotate_kek' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.retire_key_version(key_name text, version integer) RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_retire_key_version' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.restore_key_version(key_name text, version integer) RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_restore_key_version' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.destroy_key_version(key_name text, version integer) RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_destroy_key_version' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.destroy_key(key_name text) RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_destroy_key' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.grant_key(key_name text, role name, privilege text) RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_grant_key' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION keysmith.revoke_key(key_name text, role name, privilege text) RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_revoke_key' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION keysmith.destroy_key(text) IS
    'crypto-shredding: erase every wrapped DEK of the key; its values become unrecoverable; cannot be undone';

CREATE FUNCTION keysmith.add_local_master_key() RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_add_local_master_key' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION keysmith._local_master_key_versions(OUT version bigint, OUT is_current boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'keysmith_local_master_key_versions' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION keysmith._dek_encryptions(key_id integer, version integer) RETURNS bigint
AS 'MODULE_PATHNAME', 'keysmith_dek_encryptions' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

-- Which master-key versions are in the file, and how many DEK versions of
-- this database each still wraps.  Drop a version from the file only when
-- wrapped_dek_versions is 0 here in every database that uses keysmith.
CREATE FUNCTION keysmith.local_master_keys(
    OUT version bigint, OUT is_current boolean, OUT in_file boolean, OUT wrapped_dek_versions bigint)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT coalesce(f.version, u.kek_version), coalesce(f.is_current, false),
       f.version IS NOT NULL, coalesce(u.n, 0)
  FROM keysmith._local_master_key_versions() f
  FULL JOIN (SELECT v.kek_version, count(*) AS n
               FROM keysmith.key_version v JOIN keysmith.key k USING (key_id)
              WHERE k.kms = 'local' AND v.wrapped_dek IS NOT NULL
              GROUP BY v.kek_version) u ON u.kek_version = f.version
 ORDER BY 1
$$;

-- Views (no key material, wrapped or not) --------------------------------------

CREATE VIEW keysmith.keys AS
SELECT k.key_id,
       k.name,
       k.kms,
       k.state,
       k.current_version,
       pg_catalog.count(v.version) FILTER (WHERE v.state OPERATOR(pg_catalog.=) 'active') AS active_versions,
       pg_catalog.count(v.version) FILTER (WHERE v.state OPERATOR(pg_catalog.=) 'retired') AS retired_versions,
       pg_catalog.count(v.version) FILTER (WHERE v.state OPERATOR(pg_catalog.=) 'destroyed') AS destroyed_versions,
       pg_catalog.count(v.version) AS versions,
       k.created_at,
       k.rotated_at,
       k.destroyed_at,
       keysmith._dek_encryptions(k.key_id, k.current_version) AS current_version_encryptions
  FROM keysmith.key k
  LEFT JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id
 GROUP BY k.key_id;

CREATE VIEW keysmith.key_versions AS
SELECT k.name AS key_name, v.version, v.state,
       v.version OPERATOR(pg_catalog.=) k.current_version AS is_current,
       v.kek_version, v.created_at, v.retired_at, v.destroyed_at,
       keysmith._dek_encryptions(v.key_id, v.version) AS encryptions
  FROM keysmith.key_version v JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id;

CREATE VIEW keysmith.key_grants AS
SELECT k.name AS key_name, a.grantee, a.privilege, a.granted_at
  FROM keysmith.key_acl a JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) a.key_id;

CREATE VIEW keysmith.reencrypt_progress AS
SELECT j.tbl AS table_name,
       j.col AS column_name,
       CASE WHEN j.state OPERATOR(pg_catalog.=) 'running' AND NOT EXISTS (
                 SELECT 1 FROM pg_catalog.pg_locks l
                  WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
                    AND l.classid OPERATOR(pg_catalog.=) 19283
                    AND l.objid OPERATOR(pg_catalog.=) j.tbl::pg_catalog.oid
                    AND l.objsubid OPERATOR(pg_catalog.=) 2)
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

-- Rows per key and version in one column, so a DBA sees what still uses
-- old versions.  Reads the header bytes only; runs with the caller's rights.
CREATE FUNCTION keysmith.key_version_usage(tbl regclass, col name)
RETURNS TABLE (key_name text, key_version bigint, state text, is_current boolean, rows bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM keysmith._check_bytea_column(tbl, col);
    RETURN QUERY EXECUTE format(
        'SELECT kv.key_name, u.ver, kv.state, kv.is_current, u.n
           FROM (SELECT (''x'' || encode(substr(%1$I, 3, 4), ''hex''))::bit(32)::bigint AS kid,
                        (''x'' || encode(substr(%1$I, 7, 4), ''hex''))::bit(32)::bigint AS ver,
                        count(*) AS n
                   FROM %2$s
                  WHERE %1$I IS NOT NULL AND octet_length(%1$I) >= 38
                  GROUP BY 1, 2) u
           LEFT JOIN keysmith.keys k ON k.key_id = u.kid
           LEFT JOIN keysmith.key_versions kv ON kv.key_name = k.name AND kv.version = u.ver
          ORDER BY 1, 2', col, tbl);
END
$$;

CREATE FUNCTION keysmith._check_bytea_column(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ oid;
BEGIN
    SELECT a.atttypid INTO typ FROM pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', col, tbl USING ERRCODE = '42703';
    END IF;
    IF typ <> 'bytea'::regtype THEN
        RAISE EXCEPTION 'column "%" of relation % is of type %, not bytea', col, tbl, typ::regtype
            USING ERRCODE = '42804';
    END IF;
END
$$;

-- Online re-encryption: every value of tbl.col that is not on its key's
-- current version is re-encrypted in batches of batch_size rows, one
-- transaction each, so no lock is held longer than a batch.  Rows are
-- addressed by ctid and rewritten with UPDATE ... WHERE ctid = ANY(...): a
-- row that a concurrent writer changed no longer matches and is picked up by
-- a later pass with its new value.  Passes repeat until one finds nothing.
-- Progress is kept in keysmith.reencrypt_job (view reencrypt_progress); a
-- second CALL after a cancel, an error or a crash resumes where the last
-- committed batch ended.  pause waits between batches to throttle.
CREATE PROCEDURE keysmith.reencrypt(tbl regclass, col name, batch_size integer DEFAULT 10000,
                                    context_expr text DEFAULT NULL, pause interval DEFAULT '0')
LANGUAGE plpgsql
AS $$
DECLARE
    resume tid;
    done_before bigint := 0;
    done bigint := 0;
    ctids tid[];
    n bigint;
    pass_rows bigint;
    total bigint;
    started_mid boolean;
    ctx text := coalesce('(' || context_expr || ')', 'NULL');
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF pause IS NULL OR pause < '0'::interval THEN
        RAISE EXCEPTION 'pause must not be negative' USING ERRCODE = '22023';
    END IF;
    PERFORM keysmith._check_bytea_column(tbl, col);
    IF NOT pg_catalog.pg_try_advisory_lock(19283, tbl::oid::integer) THEN
        RAISE EXCEPTION 'keysmith.reencrypt is already running on %', tbl USING ERRCODE = '55P03';
    END IF;

    SELECT j.resume_after, j.rows_done INTO resume, done_before
      FROM keysmith.reencrypt_job j
     WHERE j.tbl = reencrypt.tbl AND j.col = reencrypt.col AND j.state <> 'done';
    done_before := coalesce(done_before, 0);
    EXECUTE format('SELECT count(*) FROM %s WHERE keysmith.ciphertext_needs_reencrypt(%I)', tbl, col)
       INTO total;
    INSERT INTO keysmith.reencrypt_job AS j (tbl, col, state, started_at, rows_done, rows_total, resume_after)
    VALUES (tbl, col, 'running', clock_timestamp(), done_before, done_before + total, resume)
    ON CONFLICT ON CONSTRAINT reencrypt_job_pkey DO UPDATE
       SET state = 'running', started_at = CASE WHEN j.state = 'done' THEN excluded.started_at ELSE j.started_at END,
           finished_at = NULL, rows_done = excluded.rows_done, rows_total = excluded.rows_total,
           resume_after = excluded.resume_after;
    COMMIT;
    started_mid := resume IS NOT NULL;

    LOOP
        pass_rows := 0;
        LOOP
            EXECUTE format('SELECT array_agg(ctid) FROM (SELECT ctid FROM %s WHERE ctid > $1'
                           ' AND keysmith.ciphertext_needs_reencrypt(%I) LIMIT $2) s', tbl, col)
               INTO ctids USING coalesce(resume, '(0,0)'::tid), batch_size;
            EXIT WHEN ctids IS NULL;
            EXECUTE format('UPDATE %1$s SET %2$I = keysmith.rewrap_value(%2$I, %3$s)'
                           ' WHERE ctid = ANY($1) AND keysmith.ciphertext_needs_reencrypt(%2$I)',
                           tbl, col, ctx)
               USING ctids;
            GET DIAGNOSTICS n = ROW_COUNT;
            SELECT max(c) INTO resume FROM unnest(ctids) AS c;
            done := done + n;
            pass_rows := pass_rows + n;
            UPDATE keysmith.reencrypt_job j
               SET rows_done = done_before + done, last_batch_at = clock_timestamp(), resume_after = resume
             WHERE j.tbl = reencrypt.tbl AND j.col = reencrypt.col;
            COMMIT;
            IF pause > '0'::interval THEN
                PERFORM pg_sleep_for(pause);
            END IF;
        END LOOP;
        -- a pass that started mid-table, or changed anything, is followed
        -- by a full pass: concurrent updates may move rows behind us
        EXIT WHEN pass_rows = 0 AND NOT started_mid;
        started_mid := false;
        resume := NULL;
        UPDATE keysmith.reencrypt_job j SET resume_after = NULL
         WHERE j.tbl = reencrypt.tbl AND j.col = reencrypt.col;
        COMMIT;
    END LOOP;

    UPDATE keysmith.reencrypt_job j
       SET state = 'done', finished_at = clock_timestamp(), resume_after = NULL,
           rows_total = rows_done
     WHERE j.tbl = reencrypt.tbl AND j.col = reencrypt.col;
    COMMIT;
    PERFORM pg_catalog.pg_advisory_unlock(19283, tbl::oid::integer);
END
$$;

-- Privileges -----------------------------------------------------------------

REVOKE ALL ON FUNCTION keysmith.create_key(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.flush_dek_cache() FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.encrypt_value(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.encrypt_value(text, bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.decrypt_value(bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.decrypt_value_bytea(bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.ciphertext_info(bytea) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION keysmith.encrypt_value(text, text, text) TO keysmith_user;
GRANT EXECUTE ON FUNCTION keysmith.encrypt_value(text, bytea, text) TO keysmith_user;
GRANT EXECUTE ON FUNCTION keysmith.decrypt_value(bytea, text) TO keysmith_user;
GRANT EXECUTE ON FUNCTION keysmith.decrypt_value_bytea(bytea, text) TO keysmith_user;
GRANT EXECUTE ON FUNCTION keysmith.ciphertext_info(bytea) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.create_key(text, text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.flush_dek_cache() TO keysmith_user, keysmith_admin;

REVOKE ALL ON FUNCTION keysmith.rewrap_value(bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.ciphertext_needs_reencrypt(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.rotate_dek(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.rotate_kek(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.retire_key_version(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.restore_key_version(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.destroy_key_version(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.destroy_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.grant_key(text, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.revoke_key(text, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.add_local_master_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._local_master_key_versions() FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._dek_encryptions(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.local_master_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.key_version_usage(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._check_bytea_column(regclass, name) FROM PUBLIC;
REVOKE ALL ON PROCEDURE keysmith.reencrypt(regclass, name, integer, text, interval) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION keysmith.rewrap_value(bytea, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.ciphertext_needs_reencrypt(bytea) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._check_bytea_column(regclass, name) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON PROCEDURE keysmith.reencrypt(regclass, name, integer, text, interval) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.rotate_dek(text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.rotate_kek(text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.retire_key_version(text, integer) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.restore_key_version(text, integer) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.destroy_key_version(text, integer) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.destroy_key(text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.grant_key(text, name, text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.revoke_key(text, name, text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._dek_encryptions(integer, integer) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.local_master_keys() TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.key_version_usage(regclass, name) TO keysmith_admin;
GRANT SELECT ON keysmith.keys, keysmith.key_versions, keysmith.key_grants, keysmith.key_event TO keysmith_admin;
GRANT SELECT ON keysmith.reencrypt_progress TO keysmith_user, keysmith_admin;
GRANT SELECT, INSERT, UPDATE ON keysmith.reencrypt_job TO keysmith_user, keysmith_admin;
