-- extension/keysmith--0.2--0.3.sql
--
-- keysmith 0.3: trust boundaries (docs/security.md).
--   * keysmith is installed only into a schema that no role but a
--     superuser owns or may create objects in;
--   * templates: owner_role must be one of member_of, and the whole
--     membership closure of member_of is checked (allow_role_attributes);
--   * keysmith.reencrypt no longer runs any name through the caller's
--     search_path, and its progress rows are written only through
--     functions that check the caller may UPDATE the table;
--   * no role but the extension owner may write any keysmith table.
-- The full 0.3 install script is 0.1, 0.1--0.2 and this file (the Makefile
-- builds it).  Everything here runs inside CREATE/ALTER EXTENSION's
-- transaction, so the guard below undoes a whole install when it fails.

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.3'" to load this file. \quit

-- BEGIN install guard (the Makefile also puts this block first in the full
-- install script, ahead of any CREATE that could collide with an object the
-- schema's owner planted)
-- A role that owns the schema keysmith is installed into, or
-- may create objects in it, could later rename it or put look-alike
-- objects in front of keysmith's superuser code.
DO $guard$
DECLARE
    owner_name name;
    owner_super boolean;
    creators text;
BEGIN
    SELECT r.rolname, r.rolsuper INTO owner_name, owner_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
     WHERE n.oid OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace;
    IF NOT owner_super THEN
        RAISE EXCEPTION 'keysmith refuses to install into schema "@extschema@", which is owned by role "%"', owner_name
            USING ERRCODE = '42501',
                  DETAIL = 'A schema owner who is not a superuser could rename it or put look-alike tables in front of keysmith''s functions.',
                  HINT = 'Drop or rename that schema, or make a superuser its owner, then create the extension again.';
    END IF;
    SELECT pg_catalog.string_agg(CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                      ELSE pg_catalog.quote_ident(r.rolname::pg_catalog.text) END, ', ')
      INTO creators
      FROM pg_catalog.pg_namespace n,
           LATERAL pg_catalog.aclexplode(n.nspacl) a
      LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
     WHERE n.oid OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace
       AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
       AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
       AND NOT coalesce(r.rolsuper, false);
    IF creators IS NOT NULL THEN
        RAISE EXCEPTION 'keysmith refuses to install into schema "@extschema@", where % may create objects', creators
            USING ERRCODE = '42501',
                  HINT = 'REVOKE CREATE ON SCHEMA @extschema@ from those roles, then try again.';
    END IF;
END
$guard$;
-- END install guard

-- Templates: a superuser's explicit opt-in to role attributes in member_of.
ALTER TABLE keysmith.role_template
    ADD COLUMN allow_role_attributes boolean NOT NULL DEFAULT false;

CREATE OR REPLACE VIEW keysmith.role_templates AS
SELECT t.name, t.member_of, t.default_ttl, t.max_ttl, t.username_prefix,
       t.max_leases, t.connection_limit, t.owner_role, t.issuers,
       t.created_at, t.created_by,
       (SELECT pg_catalog.count(*) FROM keysmith.lease l
         WHERE l.template OPERATOR(pg_catalog.=) t.name
           AND l.state OPERATOR(pg_catalog.<>) 'revoked') AS unrevoked_leases,
       t.allow_role_attributes
  FROM keysmith.role_template t;

COMMENT ON FUNCTION keysmith.create_role_template(text, text[], interval, interval, jsonb) IS
    'define a template for leased roles; options: username_prefix, max_leases, connection_limit, owner_role, issuers, allow_role_attributes';

-- Re-encryption progress: written only through these functions ----------------

ALTER TABLE keysmith.reencrypt_job
    ADD COLUMN pass_rows bigint NOT NULL DEFAULT 0,
    ADD COLUMN started_mid boolean NOT NULL DEFAULT false;

REVOKE ALL ON keysmith.reencrypt_job FROM keysmith_user, keysmith_admin;

CREATE FUNCTION keysmith._reencrypt_job_get(tbl pg_catalog.regclass, col pg_catalog.name)
RETURNS TABLE (state pg_catalog.text, rows_done pg_catalog.int8, rows_total pg_catalog.int8,
               resume_after pg_catalog.tid, pass_rows pg_catalog.int8, started_mid pg_catalog.bool)
AS 'MODULE_PATHNAME', 'keysmith_reencrypt_job_get'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION keysmith._reencrypt_job_put(tbl pg_catalog.regclass, col pg_catalog.name, state pg_catalog.text,
    rows_done pg_catalog.int8, rows_total pg_catalog.int8, resume_after pg_catalog.tid,
    pass_rows pg_catalog.int8, started_mid pg_catalog.bool)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_reencrypt_job_put'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- keysmith.reencrypt, rebuilt so that it cannot be steered through the
-- caller's search_path.  A procedure that COMMITs cannot pin search_path,
-- so it only calls schema-qualified keysmith functions with arguments of
-- their exact types; each of those pins search_path and does the work.
-- The user's context_expr is evaluated under that pinned path too:
-- qualify any function of your own that it calls.

-- Checks the arguments, takes the advisory lock, starts or resumes the job.
CREATE FUNCTION keysmith._reencrypt_start(tbl regclass, col name, batch_size integer, pause interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
    total bigint;
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
    IF NOT pg_try_advisory_lock(19283, tbl::oid::integer) THEN
        RAISE EXCEPTION 'keysmith.reencrypt is already running on %', tbl USING ERRCODE = '55P03';
    END IF;
    SELECT * INTO j FROM keysmith._reencrypt_job_get(tbl, col);
    IF FOUND AND j.state <> 'done' THEN
        done_before := j.rows_done;
        resume := j.resume_after;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE keysmith.ciphertext_needs_reencrypt(%I)', tbl, col)
       INTO total;
    PERFORM keysmith._reencrypt_job_put(tbl, col, 'running', done_before, done_before + total,
                                        resume, 0, resume IS NOT NULL);
END
$$;

-- One batch, or the end of a pass.  False when the job is done.
CREATE FUNCTION keysmith._reencrypt_step(tbl regclass, col name, batch_size integer, context_expr text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
    ctids tid[];
    n bigint;
    last tid;
    ctx text := coalesce('(' || context_expr || ')', 'NULL');
BEGIN
    SELECT * INTO j FROM keysmith._reencrypt_job_get(tbl, col);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'keysmith.reencrypt has no job for %.%', tbl, col USING ERRCODE = '55000';
    END IF;
    EXECUTE format('SELECT array_agg(ctid) FROM (SELECT ctid FROM %s WHERE ctid > $1'
                   ' AND keysmith.ciphertext_needs_reencrypt(%I) LIMIT $2) s', tbl, col)
       INTO ctids USING coalesce(j.resume_after, '(0,0)'::tid), batch_size;
    IF ctids IS NULL THEN
        -- a pass that started mid-table, or changed anything, is followed
        -- by a full pass: concurrent updates may move rows behind us
        IF j.pass_rows = 0 AND NOT j.started_mid THEN
            PERFORM keysmith._reencrypt_job_put(tbl, col, 'done', j.rows_done, j.rows_done, NULL, 0, false);
            RETURN false;
        END IF;
        PERFORM keysmith._reencrypt_job_put(tbl, col, 'running', j.rows_done, j.rows_total, NULL, 0, false);
        RETURN true;
    END IF;
    EXECUTE format('UPDATE %1$s SET %2$I = keysmith.rewrap_value(%2$I, %3$s)'
                   ' WHERE ctid = ANY($1) AND keysmith.ciphertext_needs_reencrypt(%2$I)',
                   tbl, col, ctx)
       USING ctids;
    GET DIAGNOSTICS n = ROW_COUNT;
    SELECT max(c) INTO last FROM unnest(ctids) AS c;
    PERFORM keysmith._reencrypt_job_put(tbl, col, 'running', j.rows_done + n, j.rows_total, last,
                                        j.pass_rows + n, j.started_mid);
    RETURN true;
END
$$;

CREATE FUNCTION keysmith._reencrypt_end(tbl regclass)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_advisory_unlock(19283, tbl::oid::integer) $$;

-- Online re-encryption: every value of tbl.col that is not on its key's
-- current version is re-encrypted in batches of batch_size rows, one
-- transaction each, so no lock is held longer than a batch.  Rows are
-- addressed by ctid and rewritten with UPDATE ... WHERE ctid = ANY(...): a
-- row that a concurrent writer changed no longer matches and is picked up by
-- a later pass with its new value.  Passes repeat until one finds nothing.
-- Progress is kept in keysmith.reencrypt_job (view reencrypt_progress); a
-- second CALL after a cancel, an error or a crash resumes where the last
-- committed batch ended.  pause waits between batches to throttle.
-- This body must stay free of any unqualified name: it runs under the
-- caller's search_path (test/pgtap/09_hostile_search_path.sql).
CREATE OR REPLACE PROCEDURE keysmith.reencrypt(tbl regclass, col name, batch_size integer DEFAULT 10000,
                                               context_expr text DEFAULT NULL, pause interval DEFAULT '0')
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM keysmith._reencrypt_start(tbl, col, batch_size, pause);
    COMMIT;
    WHILE keysmith._reencrypt_step(tbl, col, batch_size, context_expr) LOOP
        COMMIT;
        PERFORM pg_catalog.pg_sleep_for(pause);
    END LOOP;
    COMMIT;
    PERFORM keysmith._reencrypt_end(tbl);
END
$$;

REVOKE ALL ON FUNCTION keysmith._reencrypt_job_get(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._reencrypt_job_put(regclass, name, text, bigint, bigint, tid, bigint, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._reencrypt_start(regclass, name, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._reencrypt_step(regclass, name, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._reencrypt_end(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_job_get(regclass, name) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_job_put(regclass, name, text, bigint, bigint, tid, bigint, boolean)
    TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_start(regclass, name, integer, interval) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_step(regclass, name, integer, text) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._reencrypt_end(regclass) TO keysmith_user, keysmith_admin;
