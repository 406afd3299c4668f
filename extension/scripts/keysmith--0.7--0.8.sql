-- extension/keysmith--0.7--0.8.sql
--
-- keysmith 0.8: more KMS providers (aws_kms; the library decides which
-- types exist), a cluster-wide cache of unwrapped data keys for external
-- KMSs, and moving keys between providers (docs/kms-providers.md).
--   * keysmith.migrate_key: re-wraps every DEK version of a key under
--     another provider, touching no encrypted value;
--   * keysmith.flush_shared_dek_cache and keysmith.dek_cache_stats: the
--     shared cache, for keysmith_admin.
-- The full 0.8 install script is the 0.7 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.8'" to load this file. \quit

CREATE FUNCTION keysmith.migrate_key(key_name text, to_provider text, to_kms_key text DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_migrate_key'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.migrate_key(text, text, text) IS
    'move a key to another KMS provider (to_kms_key: its reference there): every DEK version is re-wrapped, no value is touched; returns how many versions moved';

CREATE FUNCTION keysmith.flush_shared_dek_cache()
RETURNS integer
AS 'MODULE_PATHNAME', 'keysmith_flush_shared_dek_cache'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION keysmith.flush_shared_dek_cache() IS
    'wipe this database''s data keys from the shared cache, and have every backend of the database drop its own';

CREATE FUNCTION keysmith.dek_cache_stats(
    OUT slots integer, OUT used integer, OUT hits bigint, OUT unwraps bigint,
    OUT waits bigint, OUT stale_uses bigint, OUT failures bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'keysmith_dek_cache_stats'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION keysmith.dek_cache_stats() IS
    'the shared DEK cache of external KMSs: slots, slots in use, and counts since the server started';

REVOKE ALL ON FUNCTION keysmith.migrate_key(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.flush_shared_dek_cache() FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.dek_cache_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.migrate_key(text, text, text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.flush_shared_dek_cache() TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.dek_cache_stats() TO keysmith_admin;
