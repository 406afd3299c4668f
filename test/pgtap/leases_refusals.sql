-- test/pgtap/leases_refusals.sql: every refusal of the lease
-- functions, with its SQLSTATE.  Runs in the reaper's database (postgres);
-- everything is rolled back.
-- keysmith-test-database: postgres
BEGIN;
SELECT plan(46);

CREATE ROLE tap_rw NOLOGIN;
CREATE ROLE tap_other NOLOGIN;
CREATE ROLE tap_super SUPERUSER NOLOGIN;
CREATE ROLE tap_issuer NOLOGIN IN ROLE keysmith_user;
CREATE ROLE tap_stranger NOLOGIN IN ROLE keysmith_user;
CREATE ROLE tap_admin NOLOGIN IN ROLE keysmith_admin;
GRANT tap_rw TO tap_admin WITH ADMIN OPTION;

-- templates: names and prefixes are identifiers, never spliced
SELECT throws_ok($$SELECT keysmith.create_role_template('x"; DROP ROLE postgres; --', ARRAY['tap_rw'])$$,
    '42602', 'invalid template name', 'a hostile template name');
SELECT throws_ok($$SELECT keysmith.create_role_template('Robert', ARRAY['tap_rw'])$$,
    '42602', 'invalid template name', 'an upper-case template name');
SELECT throws_ok($$SELECT keysmith.create_role_template('', ARRAY['tap_rw'])$$,
    '42602', 'invalid template name', 'an empty template name');
SELECT throws_ok($$SELECT keysmith.create_role_template(repeat('a', 33), ARRAY['tap_rw'])$$,
    '42602', 'invalid template name', 'a 33-character template name');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"username_prefix": "a\"; DROP ROLE x; --"}')$$,
    '42602', 'invalid username_prefix', 'a hostile username prefix');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"username_prefix": "pg_"}')$$,
    '42602', 'invalid username_prefix', 'a prefix PostgreSQL reserves');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"username_prefix": 7}')$$,
    '42602', 'invalid username_prefix', 'a prefix that is not a string');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"colour": "red"}')$$,
    '22023', 'unknown template option "colour"', 'an unknown option');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '[]')$$,
    '22023', 'template options must be a JSON object', 'options that are not an object');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"max_leases": 0}')$$,
    '22023', 'invalid max_leases', 'max_leases 0');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"max_leases": 1.5}')$$,
    '22023', 'invalid max_leases', 'max_leases not whole');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"connection_limit": -2}')$$,
    '22023', 'invalid connection_limit', 'connection_limit -2');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"issuers": "tap_issuer"}')$$,
    '22023', 'issuers must be an array of role names', 'issuers not an array');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"issuers": ["no_such_role"]}')$$,
    '42704', 'role "no_such_role" named in issuers does not exist', 'an issuer that does not exist');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY[]::text[])$$,
    '22023', 'member_of must name at least one role', 'no member_of roles');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['no_such_role'])$$,
    '42704', 'role "no_such_role" named in member_of does not exist', 'a member_of role that does not exist');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_super'])$$,
    '42501', 'a leased role may not be a member of superuser role "tap_super"', 'a superuser member_of role');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], '2 hours', '1 hour')$$,
    '22023', 'invalid lease durations', 'default_ttl above max_ttl');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], '0 seconds')$$,
    '22023', 'invalid lease durations', 'a zero default_ttl');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', NULL)$$,
    '22004', 'member_of must not be null', 'a null member_of');

-- who may manage templates
SET ROLE tap_admin;
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_other'])$$,
    '42501', 'permission denied to grant membership in role "tap_other"', 'an admin without ADMIN OPTION on the role');
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], options => '{"owner_role": "tap_admin"}')$$,
    '22023', 'owner_role "tap_admin" is not one of the template''s member_of roles', 'an owner_role outside member_of, even the admin itself');
SELECT lives_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'], '1 hour', '2 hours',
    '{"issuers": ["tap_issuer"], "max_leases": 2}')$$, 'an admin with ADMIN OPTION creates a template');
RESET ROLE;
SELECT throws_ok($$SELECT keysmith.create_role_template('t1', ARRAY['tap_rw'])$$,
    '42710', 'role template "t1" already exists', 'a duplicate template');
SET ROLE tap_stranger;
SELECT throws_ok($$SELECT keysmith.create_role_template('t2', ARRAY['tap_rw'])$$,
    '42501', 'permission denied for function create_role_template', 'keysmith_user may not create templates');
RESET ROLE;

-- issuing
SET ROLE tap_stranger;
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('t1')$$,
    '42501', 'permission denied to issue roles from template "t1"', 'a role the template does not list may not issue');
SET ROLE tap_issuer;
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('nope')$$,
    '42704', 'role template "nope" does not exist', 'an unknown template');
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('t1', '3 hours')$$,
    'KS011', 'requested ttl exceeds the max_ttl of template "t1"', 'a ttl above max_ttl is refused, not capped');
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('t1', '-1 minute')$$,
    '22023', 'lease ttl must be positive', 'a negative ttl');
SELECT throws_ok($$SELECT * FROM keysmith.issue_role(NULL)$$,
    '22004', 'template must not be null', 'a null template');

CREATE TEMP TABLE issued AS SELECT * FROM keysmith.issue_role('t1', '30 minutes');
INSERT INTO issued SELECT * FROM keysmith.issue_role('t1');
GRANT SELECT ON issued TO PUBLIC;
SELECT is((SELECT count(*) FROM issued WHERE length(password) >= 32 AND username ~ '^ks_t1_[a-z0-9]{16}$'), 2::bigint,
    'two leases: ks_t1_ names, passwords of 32 characters or more');
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('t1')$$,
    '53400', 'template "t1" already has its maximum of 2 leases', 'max_leases is enforced');

-- renewing
SELECT throws_ok(format($$SELECT keysmith.renew_lease(%L, '3 hours')$$, (SELECT lease_id FROM issued LIMIT 1)),
    'KS011', 'renewal would extend the lease past its max_ttl', 'renewing past max_ttl');
CREATE TEMP TABLE renewed AS
SELECT i.lease_id, i.username, i.expires_at AS before, keysmith.renew_lease(i.lease_id, '90 minutes') AS after
  FROM issued i ORDER BY i.expires_at LIMIT 1;
SELECT ok((SELECT after > before FROM renewed), 'renewing within max_ttl moves the expiry');
SELECT is((SELECT r.rolvaliduntil FROM pg_roles r JOIN renewed n ON n.username = r.rolname),
          (SELECT after FROM renewed), 'VALID UNTIL moves with the lease, to the new expiry');
SELECT isnt((SELECT r.rolvaliduntil FROM pg_roles r JOIN renewed n ON n.username = r.rolname),
          (SELECT before FROM renewed), 'and away from the old one');
SELECT throws_ok($$SELECT keysmith.renew_lease('00000000-0000-4000-8000-000000000000')$$,
    '42704', 'lease 00000000-0000-4000-8000-000000000000 does not exist', 'an unknown lease');
SELECT throws_ok($$SELECT keysmith.renew_lease(NULL)$$, '22004', 'lease_id must not be null', 'a null lease id');
SET ROLE tap_stranger;
SELECT throws_like(format($$SELECT keysmith.renew_lease(%L)$$, (SELECT lease_id FROM issued LIMIT 1)),
    'permission denied to renew lease %', 'another role may not renew the lease');
SELECT throws_like(format($$SELECT keysmith.revoke_lease(%L)$$, (SELECT lease_id FROM issued LIMIT 1)),
    'permission denied to revoke lease %', 'another role may not revoke the lease');
SELECT is((SELECT count(*) FROM keysmith.leases), 0::bigint, 'keysmith.leases shows a role only its own leases');
SET ROLE tap_issuer;
SELECT is((SELECT count(*) FROM keysmith.leases WHERE template = 't1'), 2::bigint, 'the requester sees its two leases');
SELECT lives_ok(format($$SELECT keysmith.revoke_lease(%L)$$, (SELECT lease_id FROM issued LIMIT 1)), 'the requester revokes');
SELECT throws_like(format($$SELECT keysmith.renew_lease(%L)$$, (SELECT lease_id FROM issued LIMIT 1)),
    'lease % is revoked and cannot be renewed', 'a revoked lease cannot be renewed');
RESET ROLE;

-- dropping templates, and the security label provider
SELECT throws_ok($$SELECT keysmith.drop_role_template('t1')$$,
    '2BP01', 'role template "t1" still has leases that are not revoked', 'a template with live leases');
SELECT throws_ok($$SECURITY LABEL FOR keysmith ON ROLE tap_rw IS 'admin'$$,
    '22023', 'invalid keysmith security label', 'only lease labels');

SELECT * FROM finish();
ROLLBACK;
