-- extension/scripts/keysmith--0.10--0.11.sql
--
-- keysmith 0.11: each persisted state is spelled once (issue 21).  No
-- behaviour changes; the catalog says what the code already does.
-- The full 0.11 install script is the 0.10 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.11'" to load this file. \quit

-- Re-encryption job states ---------------------------------------------------
-- keysmith.reencrypt_job.state was unchecked text.  keysmith writes two
-- states, running and done (extension/keys/reencrypt.h): the 0.1 procedure
-- wrote them itself, and from 0.3 every write goes through
-- keysmith._reencrypt_job_put, which refuses any other.  Up to 0.2 any
-- keysmith user could write this table, so a row in another state is one
-- keysmith did not write: the update stops and says so rather than fail on
-- the constraint without a word, or rewrite rows someone else wrote.
DO $states$
DECLARE
    n bigint;
    found text;
BEGIN
    SELECT pg_catalog.count(*),
           pg_catalog.string_agg(DISTINCT pg_catalog.quote_literal(j.state), ', ')
      INTO n, found
      FROM keysmith.reencrypt_job j
     WHERE j.state OPERATOR(pg_catalog.<>) ALL (ARRAY['running', 'done']);
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'keysmith.reencrypt_job holds % row(s) in a state keysmith never writes', n
            USING ERRCODE = '23514',
                  DETAIL = pg_catalog.format('States found: %s.  keysmith writes only running and done; up to 0.2 any keysmith user could write this table.', found),
                  HINT = 'Set their state to running (keysmith resumes any job that is not done) or delete them, then update the extension again.';
    END IF;
END
$states$;

ALTER TABLE keysmith.reencrypt_job ADD CONSTRAINT reencrypt_job_state_check
    CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'done']));

-- Rotation in flight ---------------------------------------------------------
-- A rotation is in flight while its state names a step still to run:
-- create, set, test or finish (rotator/rotation.h).  The unique index that
-- allows one rotation in flight per secret and the secrets view each
-- spelled that set out; both now ask this function.  It is an SQL function
-- with a standard body, so its names are bound when it is created and no
-- search_path applies when it runs, and the planner inlines it (a SET
-- clause would stop that): the index predicate still reads, to the planner,
-- as the state test the worker's queries make, which lets them use the index.
-- Not STRICT: for a NULL state it gives NULL, as the test it replaces did.
-- Views evaluate it with the rights of the role that reads them, so the
-- roles that may read keysmith.secrets may execute it.
CREATE FUNCTION keysmith._rotation_in_flight(state text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN state OPERATOR(pg_catalog.=) ANY (ARRAY['create', 'set', 'test', 'finish']::pg_catalog.text[]);
REVOKE ALL ON FUNCTION keysmith._rotation_in_flight(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith._rotation_in_flight(text) TO keysmith_user, keysmith_admin;

DROP INDEX keysmith.rotation_in_flight_idx;
-- At most one rotation in flight per secret; the worker's queue.
CREATE UNIQUE INDEX rotation_in_flight_idx ON keysmith.rotation (secret_name)
    WHERE keysmith._rotation_in_flight(state);

CREATE OR REPLACE VIEW keysmith.secrets WITH (security_barrier) AS
SELECT s.name, s.key_name AS key, s.strategy, s.owner_role,
       (SELECT v.version_id FROM keysmith.secret_version v
         WHERE v.secret_name OPERATOR(pg_catalog.=) s.name
           AND v.stage OPERATOR(pg_catalog.=) 'current') AS current_version,
       s.last_rotated_at AS last_rotated,
       (SELECT sc.next_due_at FROM keysmith.schedule sc
         WHERE sc.secret_name OPERATOR(pg_catalog.=) s.name) AS next_due,
       CASE WHEN r.state IS NULL THEN 'ok'
            WHEN keysmith._rotation_in_flight(r.state) THEN 'rotating'
            WHEN r.state OPERATOR(pg_catalog.=) 'failed' THEN 'rotation_failed'
            ELSE 'ok' END AS state,
       s.created_at
  FROM keysmith.secret s
  LEFT JOIN LATERAL (SELECT r.state FROM keysmith.rotation r
                      WHERE r.secret_name OPERATOR(pg_catalog.=) s.name
                      ORDER BY r.started_at DESC LIMIT 1) r ON true
 WHERE keysmith._secret_visible(s.name);

-- Key families (issue 22) ----------------------------------------------------
-- A family is a key that wraps other keys' DEKs and encrypts no values; its
-- members (children) are keys whose DEK versions are wrapped locally by the
-- family's current DEK version, so a million children cost the KMS one
-- unwrap per family version, not one per child.  docs/key-rotation.md.
-- parent_id names the family's key_id.  No foreign key: a table that
-- references itself makes pg_dump warn of circular constraints on every
-- dump; only keysmith writes these rows, and keys are never deleted.
ALTER TABLE keysmith.key
    ADD COLUMN family boolean NOT NULL DEFAULT false,
    ADD COLUMN parent_id integer,
    ADD CONSTRAINT key_family_not_member CHECK (NOT (family AND parent_id IS NOT NULL));
-- A family's members, by family: rewrapping and shredding walk them.
CREATE INDEX key_parent_idx ON keysmith.key (parent_id, key_id) WHERE parent_id IS NOT NULL;

-- A member's version names the family version whose DEK wraps it; its
-- kek_version is then 'parent'.
ALTER TABLE keysmith.key_version ADD COLUMN wrapped_by integer;
ALTER TABLE keysmith.key_version ADD CONSTRAINT key_version_wrapped_by_check
    CHECK (wrapped_by IS NULL OR kek_version OPERATOR(pg_catalog.=) 'parent');

-- Audit by key: key_event grows by one row per lifecycle call of every key,
-- and is read by the key's name (keys are never renamed).
CREATE INDEX key_event_key_idx ON keysmith.key_event (key_name, event_id);

-- Shreds: every version of a member whose DEK was erased, with the family
-- version that wrapped it last.  Copies of it outlive the erasure (dead
-- tuples, WAL, backups, dumps), each wrapped by that family version or an
-- older one; the shred is complete once no such family version can be
-- unwrapped any more (keysmith.key_shreds says which, and why not).
CREATE TABLE keysmith.key_shred (
    key_id integer NOT NULL,
    version integer NOT NULL,
    key_name text NOT NULL,
    parent_id integer NOT NULL REFERENCES keysmith.key (key_id),
    wrapped_by integer NOT NULL,
    shredded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (key_id, version)
);
CREATE INDEX key_shred_parent_idx ON keysmith.key_shred (parent_id, wrapped_by);
REVOKE ALL ON keysmith.key_shred FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_shred', '');

-- create_key gains parent: a member of a family (kms and kms_key are then
-- the family's; a member takes neither, beyond kms's default 'local').
DROP FUNCTION keysmith.create_key(text, text, text);
CREATE FUNCTION keysmith.create_key(name text, kms text DEFAULT 'local', kms_key text DEFAULT NULL,
                                    parent text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_create_key'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.create_key(text, text, text, text) IS
    'Create a key with DEK version 1, wrapped by a KMS provider (default local), or by its family''s current DEK when parent is given';
REVOKE ALL ON FUNCTION keysmith.create_key(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.create_key(text, text, text, text) TO keysmith_admin;

CREATE FUNCTION keysmith.create_key_family(name text, kms text DEFAULT 'local', kms_key text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_create_key_family'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.create_key_family(text, text, text) IS
    'Create a key family: a key that wraps its members'' DEKs and encrypts no values';
REVOKE ALL ON FUNCTION keysmith.create_key_family(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.create_key_family(text, text, text) TO keysmith_admin;

-- Many members in one call: one wrap each under the family's current DEK,
-- one statement per table.
CREATE FUNCTION keysmith.create_keys(parent text, names text[])
RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_create_keys'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.create_keys(text, text[]) IS
    'Create members of a key family, one per name; returns how many were created';
REVOKE ALL ON FUNCTION keysmith.create_keys(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.create_keys(text, text[]) TO keysmith_admin;

CREATE FUNCTION keysmith.complete_shreds(parent text, retire_master_key boolean DEFAULT true,
    OUT family_version integer, OUT members_rewrapped bigint, OUT versions_destroyed integer,
    OUT master_keys_retired integer)
RETURNS record
AS 'MODULE_PATHNAME', 'keysmith_complete_shreds'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.complete_shreds(text, boolean) IS
    'Rotate a key family, rewrap its members, destroy its older versions and retire the master key versions no key needs';
REVOKE ALL ON FUNCTION keysmith.complete_shreds(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.complete_shreds(text, boolean) TO keysmith_admin;

CREATE FUNCTION keysmith.retire_local_master_key(version integer)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_retire_local_master_key'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.retire_local_master_key(integer) IS
    'Remove a master key version from the local master key file once no key of this database needs it (superuser)';
REVOKE ALL ON FUNCTION keysmith.retire_local_master_key(integer) FROM PUBLIC;

-- The oldest master key version in the file a local provider reads (its
-- master_key_file, else keysmith.local_master_key_file): keysmith.key_shreds
-- asks whether a master key version that wrapped a family version is left.
-- Reads only files the providers name; keysmith_admin may read the view.
CREATE FUNCTION keysmith._local_master_key_oldest(provider text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'keysmith_local_master_key_oldest'
LANGUAGE C STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION keysmith._local_master_key_oldest(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith._local_master_key_oldest(text) TO keysmith_admin;

-- Each shred: complete once no family version that may have wrapped a copy
-- is left (pending: complete_shreds rotates the family and destroys them)
-- and, for a family under the local provider's own file, no master key
-- version that wrapped such a family version is left in its file (blocked,
-- with the reason).  A family under another KMS: complete on
-- keysmith's side; what the KMS still decrypts is the KMS's (limits in
-- docs/key-rotation.md).
CREATE VIEW keysmith.key_shreds AS
SELECT s.key_name, s.version, p.name AS family, s.wrapped_by AS family_version, s.shredded_at,
       CASE WHEN live.n OPERATOR(pg_catalog.>) 0 THEN 'pending'
            WHEN local.kek IS NOT NULL AND local.kek OPERATOR(pg_catalog.>=) keysmith._local_master_key_oldest(p.kms) THEN 'blocked'
            ELSE 'complete' END AS state,
       CASE WHEN live.n OPERATOR(pg_catalog.>) 0
              THEN pg_catalog.format('%s version(s) of family %s up to %s still wrap copies; run keysmith.complete_shreds(%L)',
                                     live.n, p.name, s.wrapped_by, p.name)
            WHEN local.kek IS NOT NULL AND local.kek OPERATOR(pg_catalog.>=) keysmith._local_master_key_oldest(p.kms)
              THEN pg_catalog.format('local master key version %s, which wrapped family %s, is still in the master key file; a superuser retires it with keysmith.retire_local_master_key once keysmith.local_master_keys() shows no key using it',
                                     keysmith._local_master_key_oldest(p.kms), p.name)
            ELSE NULL END AS reason
  FROM keysmith.key_shred s
  JOIN keysmith.key p ON p.key_id OPERATOR(pg_catalog.=) s.parent_id
  LEFT JOIN keysmith.kms_provider pr ON pr.name OPERATOR(pg_catalog.=) p.kms
  CROSS JOIN LATERAL (SELECT pg_catalog.count(*) AS n FROM keysmith.key_version pv
                       WHERE pv.key_id OPERATOR(pg_catalog.=) s.parent_id
                         AND pv.version OPERATOR(pg_catalog.<=) s.wrapped_by
                         AND pv.wrapped_dek IS NOT NULL) live
  LEFT JOIN LATERAL (SELECT pg_catalog.max(pv.kek_version::pg_catalog.int8) AS kek FROM keysmith.key_version pv
                      WHERE pv.key_id OPERATOR(pg_catalog.=) s.parent_id
                        AND pv.version OPERATOR(pg_catalog.<=) s.wrapped_by
                        AND pr.type OPERATOR(pg_catalog.=) 'local') local ON true;
REVOKE ALL ON keysmith.key_shreds FROM PUBLIC;
GRANT SELECT ON keysmith.key_shreds TO keysmith_admin;

-- Keys at scale: the views read each key's versions by index, so a filter on
-- the key (name, key_id) reaches the key table and count(*) reads only it.
CREATE OR REPLACE VIEW keysmith.keys AS
SELECT k.key_id,
       k.name,
       k.kms,
       k.state,
       k.current_version,
       vc.active_versions,
       vc.retired_versions,
       vc.destroyed_versions,
       vc.versions,
       k.created_at,
       k.rotated_at,
       k.destroyed_at,
       keysmith._dek_encryptions(k.key_id, k.current_version) AS current_version_encryptions,
       k.family,
       (SELECT p.name FROM keysmith.key p WHERE p.key_id OPERATOR(pg_catalog.=) k.parent_id) AS parent
  FROM keysmith.key k
  CROSS JOIN LATERAL (
       SELECT pg_catalog.count(*) FILTER (WHERE v.state OPERATOR(pg_catalog.=) 'active') AS active_versions,
              pg_catalog.count(*) FILTER (WHERE v.state OPERATOR(pg_catalog.=) 'retired') AS retired_versions,
              pg_catalog.count(*) FILTER (WHERE v.state OPERATOR(pg_catalog.=) 'destroyed') AS destroyed_versions,
              pg_catalog.count(*) AS versions
         FROM keysmith.key_version v WHERE v.key_id OPERATOR(pg_catalog.=) k.key_id) vc;

CREATE OR REPLACE VIEW keysmith.key_versions AS
SELECT k.name AS key_name, v.version, v.state,
       v.version OPERATOR(pg_catalog.=) k.current_version AS is_current,
       v.kek_version, v.created_at, v.retired_at, v.destroyed_at,
       keysmith._dek_encryptions(v.key_id, v.version) AS encryptions,
       v.server_epoch,
       v.wrapped_by
  FROM keysmith.key_version v JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id;

-- Members' versions are wrapped by their family, not by a master key.
CREATE OR REPLACE FUNCTION keysmith.local_master_keys(
    OUT version bigint, OUT is_current boolean, OUT in_file boolean, OUT wrapped_dek_versions bigint)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT coalesce(f.version, u.kek_version::pg_catalog.int8), coalesce(f.is_current, false),
       f.version IS NOT NULL, coalesce(u.n, 0)
  FROM keysmith._local_master_key_versions() f
  FULL JOIN (SELECT v.kek_version, pg_catalog.count(*) AS n
               FROM keysmith.key_version v
               JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id
               JOIN keysmith.kms_provider p ON p.name OPERATOR(pg_catalog.=) k.kms
              WHERE p.type OPERATOR(pg_catalog.=) 'local'
                AND NOT p.options OPERATOR(pg_catalog.?) 'master_key_file'
                AND k.parent_id IS NULL
                AND v.wrapped_dek IS NOT NULL
              GROUP BY v.kek_version) u ON u.kek_version OPERATOR(pg_catalog.=) f.version::pg_catalog.text
 ORDER BY 1
$$;

-- What identifies each KEK version this database has wrapped a DEK under,
-- without revealing it (docs/format.md, "KEK check values"): recorded at
-- the first wrap under (provider, kms_key, kek_version), compared at every
-- wrap after it.  A different key file of the same version number then
-- refuses to wrap (KS019) instead of splitting the data across two keys.
-- Dumped with the keys, so a restore keeps knowing its key.
CREATE TABLE keysmith.kek_check (
    provider     text NOT NULL,
    kms_key      text NOT NULL DEFAULT '',
    kek_version  text NOT NULL,
    check_value  bytea NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (provider, kms_key, kek_version)
);
REVOKE ALL ON keysmith.kek_check FROM PUBLIC;
GRANT SELECT ON keysmith.kek_check TO keysmith_admin;
SELECT pg_catalog.pg_extension_config_dump('keysmith.kek_check', '');

-- One row per live DEK version of the keys the caller administers (all
-- keys, or the one named): does it unwrap with the key material at hand,
-- and if not, the SQLSTATE and why.  Run it after a restore, before the
-- application is let in (docs/deployment.md).
CREATE FUNCTION keysmith.verify_keys(key_name text DEFAULT NULL,
    OUT key_name text, OUT version integer, OUT kms text, OUT kek_version text,
    OUT readable boolean, OUT sqlstate text, OUT reason text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'keysmith_verify_keys'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.verify_keys(text) IS
    'Try one unwrap per live DEK version of the keys the caller administers; report the unreadable ones and why';
REVOKE ALL ON FUNCTION keysmith.verify_keys(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.verify_keys(text) TO keysmith_admin;
