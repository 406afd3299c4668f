-- extension/keysmith--0.4--0.5.sql
--
-- keysmith 0.5:
--   * strategy 'sql': the secret owner's own function does the target-side
--     work of each rotation step (docs/credential-rotation.md);
--   * strategy 'postgres_remote': a role on another PostgreSQL server, set
--     with a SCRAM verifier computed here, by an admin login that is itself
--     a keysmith secret;
--   * faster online re-encryption: keysmith.reencrypt no longer counts the
--     rows to do before it starts (rows_total is an estimate from the
--     table's statistics), and each batch is one UPDATE over a range of
--     blocks, run as a TID range scan, instead of a walk that collects
--     ctids followed by an UPDATE of them.  Resumable and safe alongside
--     writers as before: a pass that changed anything, or started
--     mid-table, is followed by a full pass.
-- The full 0.5 install script is the 0.4 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.5'" to load this file. \quit

ALTER TABLE keysmith.secret DROP CONSTRAINT secret_strategy_check;
ALTER TABLE keysmith.secret ADD CONSTRAINT secret_strategy_check
    CHECK (strategy OPERATOR(pg_catalog.=) ANY (ARRAY['none', 'postgres_role', 'postgres_role_pair', 'sql',
                                                     'postgres_remote']));

COMMENT ON FUNCTION keysmith.create_secret(text, text, text, jsonb, text) IS
    'store a secret under a keysmith key; strategies none, postgres_role, postgres_role_pair, sql, postgres_remote; returns the first version id';

-- Checks the arguments, takes the advisory lock, starts or resumes the job.
-- rows_total is an estimate (pg_class.reltuples), not a count: a count
-- would read the whole table once more before any work.
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
    IF NOT pg_try_advisory_lock(19283, tbl::oid::integer) THEN
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

-- One batch, or the end of a pass.  False when the job is done.  A batch is
-- a range of blocks, [resume_after's block, that + span), rewritten by one
-- UPDATE that the planner runs as a TID range scan: no second walk to find
-- the rows first.  span is batch_size rows' worth of blocks, going by the
-- table's statistics.  resume_after is '(next block, 0)'.
CREATE OR REPLACE FUNCTION keysmith._reencrypt_step(tbl regclass, col name, batch_size integer, context_expr text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
    n bigint;
    nblocks bigint;
    per_block float8;
    span bigint;
    lo bigint;
    ctx text := coalesce('(' || context_expr || ')', 'NULL');
BEGIN
    SELECT * INTO j FROM keysmith._reencrypt_job_get(tbl, col);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'keysmith.reencrypt has no job for %.%', tbl, col USING ERRCODE = '55000';
    END IF;
    lo := coalesce((j.resume_after::text::point)[0]::bigint, 0);
    nblocks := pg_relation_size(tbl) / current_setting('block_size')::bigint;
    IF lo >= nblocks THEN
        -- a pass that started mid-table, or changed anything, is followed
        -- by a full pass: concurrent updates may move rows behind us
        IF j.pass_rows = 0 AND NOT j.started_mid THEN
            PERFORM keysmith._reencrypt_job_put(tbl, col, 'done', j.rows_done, j.rows_done, NULL, 0, false);
            RETURN false;
        END IF;
        PERFORM keysmith._reencrypt_job_put(tbl, col, 'running', j.rows_done, j.rows_total, NULL, 0, false);
        RETURN true;
    END IF;
    SELECT CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages ELSE 50 END
      INTO per_block FROM pg_class c WHERE c.oid = tbl;
    span := greatest(1, ceil(batch_size / greatest(per_block, 1)))::bigint;
    EXECUTE format('UPDATE %1$s SET %2$I = keysmith.rewrap_value(%2$I, %3$s)'
                   ' WHERE ctid >= $1 AND ctid < $2 AND keysmith.ciphertext_needs_reencrypt(%2$I)',
                   tbl, col, ctx)
       USING format('(%s,0)', lo)::tid, format('(%s,0)', lo + span)::tid;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM keysmith._reencrypt_job_put(tbl, col, 'running', j.rows_done + n,
                                        greatest(j.rows_total, j.rows_done + n),
                                        format('(%s,0)', lo + span)::tid, j.pass_rows + n, j.started_mid);
    RETURN true;
END
$$;
