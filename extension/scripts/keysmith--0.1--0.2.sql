-- extension/keysmith--0.1--0.2.sql
--
-- keysmith 0.2: leased dynamic roles.  Role templates, leases with a TTL,
-- issue / renew / revoke, and the tables the reaper background worker
-- (rotator/reaper.c) drives.  The full 0.2 install script is this file
-- appended to keysmith--0.1.sql (the Makefile builds it), so a fresh install
-- and an upgrade from 0.1 cannot drift apart; test/integration/upgrade.sh
-- compares the two anyway.

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.2'" to load this file. \quit

-- A template says what a leased role may be: the roles it is a member of
-- (its only source of privileges), how long it may live, and who may ask
-- for one.  Roles are kept as regrole so that pg_dump writes names.
CREATE TABLE keysmith.role_template (
    name             text PRIMARY KEY
                     CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,39}$'),
    member_of        regrole[] NOT NULL,
    default_ttl      interval NOT NULL,
    max_ttl          interval NOT NULL,
    username_prefix  text NOT NULL
                     CHECK (username_prefix OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,39}$'),
    max_leases       integer CHECK (max_leases OPERATOR(pg_catalog.>) 0),
    connection_limit integer NOT NULL DEFAULT -1
                     CHECK (connection_limit OPERATOR(pg_catalog.>=) -1),
    owner_role       regrole,
    issuers          regrole[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       name NOT NULL,
    CHECK (default_ttl OPERATOR(pg_catalog.>) '0'::interval),
    CHECK (default_ttl OPERATOR(pg_catalog.<=) max_ttl)
);

COMMENT ON TABLE keysmith.role_template IS 'keysmith role templates: what a leased role is a member of and how long it may live';

-- One row per issued role.  state: active -> revoking (NOLOGIN committed)
-- -> revoked (role dropped, in the same transaction).  The password is
-- never stored; the role's SCRAM verifier lives only in pg_authid.
CREATE TABLE keysmith.lease (
    lease_id        uuid PRIMARY KEY,
    template        text NOT NULL,
    username        name NOT NULL UNIQUE,
    role_oid        oid NOT NULL,
    requested_by    name NOT NULL,
    requester_oid   oid NOT NULL,
    owner_role      regrole,
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    max_expires_at  timestamptz NOT NULL,
    default_ttl     interval NOT NULL,
    state           text NOT NULL DEFAULT 'active'
                    CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['active', 'revoking', 'revoked'])),
    revoke_reason   text CHECK (revoke_reason OPERATOR(pg_catalog.=) ANY (ARRAY['expired', 'revoked', 'role_missing'])),
    revoked_at      timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    CHECK ((state OPERATOR(pg_catalog.=) 'revoked') OPERATOR(pg_catalog.=) (revoked_at IS NOT NULL))
);

-- The reaper's queue: unrevoked leases by expiry.
CREATE INDEX lease_due_idx ON keysmith.lease (expires_at)
    WHERE state OPERATOR(pg_catalog.<>) 'revoked';

-- What happened to each lease; 'revoked' is written in the transaction
-- that drops the role, so it appears exactly once per lease.
CREATE SEQUENCE keysmith.lease_event_id_seq;
CREATE TABLE keysmith.lease_event (
    event_id     bigint PRIMARY KEY DEFAULT pg_catalog.nextval('keysmith.lease_event_id_seq'),
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    lease_id     uuid NOT NULL,
    event        text NOT NULL,
    acting_role  name NOT NULL,
    detail       text
);
ALTER SEQUENCE keysmith.lease_event_id_seq OWNED BY keysmith.lease_event.event_id;
CREATE INDEX lease_event_lease_idx ON keysmith.lease_event (lease_id);

SELECT pg_catalog.pg_extension_config_dump('keysmith.role_template', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.lease', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.lease_event', '');
SELECT pg_catalog.pg_extension_config_dump('keysmith.lease_event_id_seq', '');

REVOKE ALL ON keysmith.role_template, keysmith.lease, keysmith.lease_event FROM PUBLIC;
REVOKE ALL ON SEQUENCE keysmith.lease_event_id_seq FROM PUBLIC;

-- Templates --------------------------------------------------------------------

CREATE FUNCTION keysmith.create_role_template(name text, member_of text[],
    default_ttl interval DEFAULT '1 hour', max_ttl interval DEFAULT '24 hours',
    options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_create_role_template'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.create_role_template(text, text[], interval, interval, jsonb) IS
    'define a template for leased roles; options: username_prefix, max_leases, connection_limit, owner_role, issuers';

CREATE FUNCTION keysmith.drop_role_template(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_drop_role_template'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.drop_role_template(text) IS
    'drop a role template; refused while it has leases that are not yet revoked';

-- Leases -----------------------------------------------------------------------

CREATE FUNCTION keysmith.issue_role(template text, ttl interval DEFAULT NULL)
RETURNS TABLE (username text, password text, lease_id uuid, expires_at timestamptz)
AS 'MODULE_PATHNAME', 'keysmith_issue_role'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.issue_role(text, interval) IS
    'create a short-lived login role from a template; the password is returned once and never stored';

CREATE FUNCTION keysmith.renew_lease(lease_id uuid, increment interval DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'keysmith_renew_lease'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.renew_lease(uuid, interval) IS
    'extend an active lease to now() + increment, never past issue + max_ttl';

CREATE FUNCTION keysmith.revoke_lease(lease_id uuid)
RETURNS void
AS 'MODULE_PATHNAME', 'keysmith_revoke_lease'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION keysmith.revoke_lease(uuid) IS
    'revoke a lease now: NOLOGIN, sessions terminated, owned objects reassigned or dropped, role dropped';

-- Open sessions per role, for the leases view (pg_stat_activity needs
-- pg_read_all_stats to show other roles' sessions, the owner has it).
CREATE FUNCTION keysmith._lease_sessions()
RETURNS TABLE (role_oid oid, sessions bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT usesysid, count(*) FROM pg_catalog.pg_stat_activity
 WHERE usesysid IS NOT NULL AND backend_type OPERATOR(pg_catalog.=) 'client backend'
 GROUP BY usesysid
$$;

-- Leases as their holders and admins see them: keysmith admins see every
-- lease, anyone else the leases it requested.  current_user inside a view
-- is the querying role; security_barrier keeps the filter ahead of any
-- function in the caller's query.
CREATE VIEW keysmith.leases WITH (security_barrier) AS
SELECT l.lease_id, l.template, l.username, l.requested_by,
       l.issued_at AS issued, l.expires_at AS expires,
       CASE WHEN l.state OPERATOR(pg_catalog.=) 'active'
                 AND l.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired'
            ELSE l.state END AS state,
       l.revoked_at, l.revoke_reason, l.attempts, l.last_error, l.next_attempt_at,
       coalesce(s.sessions, 0) AS open_sessions
  FROM keysmith.lease l
  LEFT JOIN keysmith._lease_sessions() s ON s.role_oid OPERATOR(pg_catalog.=) l.role_oid
                                        AND l.state OPERATOR(pg_catalog.<>) 'revoked'
 WHERE pg_catalog.pg_has_role('keysmith_admin', 'USAGE')
    OR pg_catalog.pg_has_role(l.requester_oid, 'USAGE');

CREATE VIEW keysmith.role_templates AS
SELECT t.name, t.member_of, t.default_ttl, t.max_ttl, t.username_prefix,
       t.max_leases, t.connection_limit, t.owner_role, t.issuers,
       t.created_at, t.created_by,
       (SELECT count(*) FROM keysmith.lease l
         WHERE l.template OPERATOR(pg_catalog.=) t.name
           AND l.state OPERATOR(pg_catalog.<>) 'revoked') AS unrevoked_leases
  FROM keysmith.role_template t;

REVOKE ALL ON FUNCTION keysmith.create_role_template(text, text[], interval, interval, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.drop_role_template(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.issue_role(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.renew_lease(uuid, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith.revoke_lease(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION keysmith._lease_sessions() FROM PUBLIC;
REVOKE ALL ON keysmith.leases, keysmith.role_templates FROM PUBLIC;

GRANT EXECUTE ON FUNCTION keysmith.create_role_template(text, text[], interval, interval, jsonb) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.drop_role_template(text) TO keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.issue_role(text, interval) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.renew_lease(uuid, interval) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith.revoke_lease(uuid) TO keysmith_user, keysmith_admin;
GRANT EXECUTE ON FUNCTION keysmith._lease_sessions() TO keysmith_user, keysmith_admin;
GRANT SELECT ON keysmith.leases TO keysmith_user, keysmith_admin;
GRANT SELECT ON keysmith.role_templates TO keysmith_admin;
