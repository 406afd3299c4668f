-- extension/keysmith--0.6--0.7.sql
--
-- keysmith 0.7: KMS providers are catalog rows (docs/kms-providers.md).
--   * keysmith.kms_provider: a named, configured provider of a type
--     (local, vault_transit), with options that are references only (a file, a
--     URL), never secrets; created, altered and dropped by superusers;
--   * a key names its provider (key.kms, now a foreign key) and, where the
--     provider has one, its reference in that KMS (key.kms_key);
--   * KEK versions are text, as KMSs name them (key_version.kek_version).
-- The built-in provider "local" reads keysmith.local_master_key_file, as
-- before; every existing key uses it.
-- The full 0.7 install script is the 0.6 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.7'" to load this file. \quit

CREATE TABLE keysmith.kms_provider (
    name        text PRIMARY KEY
                CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9_.:@-]{1,64}$'),
    -- checked against the types the library provides, which grow with it
    type        text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}'
                CHECK (pg_catalog.jsonb_typeof(options) OPERATOR(pg_catalog.=) 'object'),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by  name NOT NULL,
    altered_at  timestamptz
);
INSERT INTO keysmith.kms_provider (name, type, created_by) VALUES ('local', 'local', 'keysmith');
-- the built-in row comes with the extension; only the others are dumped
SELECT pg_catalog.pg_extension_config_dump('keysmith.kms_provider',
                                           'WHERE name OPERATOR(pg_catalog.<>) ''local''');
REVOKE ALL ON keysmith.kms_provider FROM PUBLIC;

ALTER TABLE keysmith.key ADD COLUMN kms_key text;
ALTER TABLE keysmith.key ADD CONSTRAINT key_kms_fkey FOREIGN KEY (kms) REFERENCES keysmith.kms_provider (name);

-- KEK versions as text: the view that shows them is made again around it
DROP VIEW keysmith.key_versions;
ALTER TABLE keysmith.key_version ALTER COLUMN kek_version TYPE text USING kek_version::pg_catalog.text;
CREATE VIEW keysmith.key_versions AS
SELECT k.name AS key_name, v.version, v.state,
       v.version OPERATOR(pg_catalog.=) k.current_version AS is_current,
       v.kek_version, v.created_at, v.retired_at, v.destroyed_at,
       keysmith._dek_encryptions(v.key_id, v.version) AS encryptions
  FROM keysmith.key_version v JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id;
REVOKE ALL ON keysmith.key_versions FROM PUBLIC;
GRANT SELECT ON keysmith.key_versions TO keysmith_admin;

-- The master keys of keysmith.local_master_key_file, and the DEK versions
-- wrapped under each: those of keys whose provider is of type local and
-- reads that file (names no master_key_file of its own).
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
                AND v.wrapped_dek IS NOT NULL
              GROUP BY v.kek_version) u ON u.kek_version OPERATOR(pg_catalog.=) f.version::pg_catalog.text
 ORDER BY 1
$$;

-- create_key gains kms_key
DROP FUNCTION keysmith.create_key(text, text);
CREATE FUNCTION keysmith.create_key(name text, kms text DEFAULT 'local', kms_key text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_create_key'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION keysmith.create_key(text, text, text) IS
    'create a key with DEK version 1, wrapped by the KMS provider kms (kms_key: the key''s reference in that KMS)';
REVOKE ALL ON FUNCTION keysmith.create_key(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keysmith.create_key(text, text, text) TO keysmith_admin;

CREATE FUNCTION keysmith.create_kms_provider(name text, type text, options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_create_kms_provider'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.alter_kms_provider(name text, options jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_alter_kms_provider'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION keysmith.drop_kms_provider(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_drop_kms_provider'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.create_kms_provider(text, text, jsonb) IS
    'superuser: a named KMS provider of a type, with options that are references only (files, URLs), never secrets';

-- Providers and how many keys use each; options are references, not secrets.
CREATE VIEW keysmith.kms_providers AS
SELECT p.name, p.type, p.options, p.created_at, p.created_by, p.altered_at,
       (SELECT pg_catalog.count(*) FROM keysmith.key k WHERE k.kms OPERATOR(pg_catalog.=) p.name) AS keys
  FROM keysmith.kms_provider p;

REVOKE ALL ON FUNCTION keysmith.create_kms_provider(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.alter_kms_provider(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.drop_kms_provider(text) FROM PUBLIC;
REVOKE ALL ON keysmith.kms_providers FROM PUBLIC;
-- the functions check for a superuser themselves; keysmith admins may see
GRANT EXECUTE ON FUNCTION keysmith.create_kms_provider(text, text, jsonb) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.alter_kms_provider(text, jsonb) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.drop_kms_provider(text) TO keysmith_admin;
GRANT SELECT ON keysmith.kms_providers TO keysmith_admin;
