-- extension/keysmith--0.8--0.9.sql
--
-- keysmith 0.9: DEK versions remember the server history they were made on
-- (docs/deployment.md).  A primary that finds the current version of a key
-- made on another history (before a failover, or in the cluster it was
-- restored from) rolls the key to a new version before its first
-- encryption: the old version's encryption count is not its to know.
--   * key_version.server_epoch: "<system identifier>/<timeline>" of the
--     primary that made the version; NULL for versions made before 0.9,
--     which count as made elsewhere (each key rolls over once after the
--     update, at its first encryption);
--   * the key_versions view shows it.
-- The full 0.9 install script is the 0.8 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.9'" to load this file. \quit

ALTER TABLE keysmith.key_version ADD COLUMN server_epoch text;
COMMENT ON COLUMN keysmith.key_version.server_epoch IS
    'system identifier and timeline ("<sysid>/<tli>") of the primary that made this DEK version';

CREATE OR REPLACE VIEW keysmith.key_versions AS
SELECT k.name AS key_name, v.version, v.state,
       v.version OPERATOR(pg_catalog.=) k.current_version AS is_current,
       v.kek_version, v.created_at, v.retired_at, v.destroyed_at,
       keysmith._dek_encryptions(v.key_id, v.version) AS encryptions,
       v.server_epoch
  FROM keysmith.key_version v JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id;
