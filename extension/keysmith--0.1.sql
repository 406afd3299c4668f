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
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE keysmith.key_id_seq OWNED BY keysmith.key.key_id;

COMMENT ON TABLE keysmith.key IS 'keysmith keys; ids are embedded in ciphertexts and must never change';

CREATE TABLE keysmith.key_version (
    key_id      integer NOT NULL REFERENCES keysmith.key (key_id),
    version     integer NOT NULL CHECK (version OPERATOR(pg_catalog.>) 0),
    wrapped_dek bytea NOT NULL,
    kek_version bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (key_id, version)
);

COMMENT ON TABLE keysmith.key_version IS 'keysmith data keys, stored only wrapped by the key''s KMS';

SELECT pg_catalog.pg_extension_config_dump('keysmith.key', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_version', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.key_id_seq', '');

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

-- No key material, wrapped or not, in this view.
CREATE VIEW keysmith.keys AS
SELECT k.name,
       k.kms,
       k.current_version,
       (SELECT pg_catalog.count(*) FROM keysmith.key_version v
         WHERE v.key_id OPERATOR(pg_catalog.=) k.key_id) AS versions,
       k.created_at
  FROM keysmith.key k;

REVOKE ALL ON keysmith.keys FROM PUBLIC;
GRANT SELECT ON keysmith.keys TO keysmith_admin;

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
