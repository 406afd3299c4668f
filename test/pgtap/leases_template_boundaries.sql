-- test/pgtap/leases_template_boundaries.sql: no template or lease gives
-- more than its creator could grant (docs/security.md, findings 3, 4, 8).
-- Each attack is performed first; then the test shows it was refused or
-- came to nothing.  Runs in the reaper's database; everything is rolled back.
-- keysmith-test-database: postgres
BEGIN;
SELECT plan(26);

CREATE ROLE tb_rw NOLOGIN;
CREATE ROLE tb_admin NOLOGIN IN ROLE keysmith_admin;
CREATE ROLE tb_issuer NOLOGIN IN ROLE keysmith_user;
GRANT tb_rw TO tb_admin WITH ADMIN OPTION;
GRANT CREATE ON SCHEMA public TO tb_rw;

-- finding 4: the superuser check looks at the whole membership closure
CREATE ROLE tb_sneaky NOLOGIN;
GRANT postgres TO tb_sneaky;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_sneaky'])$$,
    '42501', 'a leased role may not be a member of superuser role "postgres"',
    'a role that is a member of postgres is refused, even to a superuser');
CREATE ROLE tb_deeper NOLOGIN IN ROLE tb_sneaky;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_deeper'])$$,
    '42501', 'a leased role may not be a member of superuser role "postgres"',
    'two levels down too');
CREATE ROLE tb_files NOLOGIN IN ROLE pg_read_server_files;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_files'])$$,
    '42501', 'a leased role may not be a member of predefined role "pg_read_server_files"',
    'a role that holds pg_read_server_files');
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['pg_signal_backend'])$$,
    '42501', 'a leased role may not be a member of predefined role "pg_signal_backend"',
    'a predefined role named directly');
CREATE ROLE tb_ksadmin NOLOGIN IN ROLE keysmith_admin;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_ksadmin'])$$,
    '42501', 'a leased role may not be a member of keysmith role "keysmith_admin"',
    'a role that is a keysmith admin');
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['keysmith_user'])$$,
    '42501', 'a leased role may not be a member of keysmith role "keysmith_user"',
    'keysmith_user itself');

-- role attributes anywhere in the closure: refused unless a superuser opts in
CREATE ROLE tb_creator NOLOGIN CREATEROLE;
CREATE ROLE tb_mid NOLOGIN IN ROLE tb_creator;
GRANT tb_mid TO tb_admin WITH ADMIN OPTION;
SET ROLE tb_admin;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_mid'])$$,
    '42501', 'a leased role may not be a member of role "tb_creator", which has CREATEROLE',
    'a keysmith admin may not hand out CREATEROLE through a chain');
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_mid'], options => '{"allow_role_attributes": true}')$$,
    '42501', 'only a superuser may set allow_role_attributes',
    'and may not opt in');
RESET ROLE;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_mid'])$$,
    '42501', 'a leased role may not be a member of role "tb_creator", which has CREATEROLE',
    'a superuser must opt in explicitly');
CREATE ROLE tb_bypass NOLOGIN BYPASSRLS;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_bypass'])$$,
    '42501', 'a leased role may not be a member of role "tb_bypass", which has BYPASSRLS',
    'BYPASSRLS likewise');
SELECT throws_ok($$SELECT keysmith.create_role_template('tb1', ARRAY['tb_mid'], options => '{"allow_role_attributes": "yes"}')$$,
    '22023', 'allow_role_attributes must be true or false', 'the opt-in is a boolean');
SELECT lives_ok($$SELECT keysmith.create_role_template('tb_attr', ARRAY['tb_mid'], options => '{"allow_role_attributes": true}')$$,
    'a superuser opts in with allow_role_attributes');
SELECT is((SELECT allow_role_attributes FROM keysmith.role_templates WHERE name = 'tb_attr'), true,
    'role_templates shows the opt-in');
SELECT is((SELECT count(*) FROM keysmith.role_template WHERE name = 'tb1'), 0::bigint,
    'none of the refused templates exists');

-- the closure is checked again at issue time: memberships change
SELECT keysmith.create_role_template('tb_later', ARRAY['tb_rw'], '1 hour', '360 days', '{"issuers": ["tb_issuer"]}');
GRANT postgres TO tb_rw;
SET ROLE tb_issuer;
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('tb_later')$$,
    '42501', 'a leased role may not be a member of superuser role "postgres"',
    'a template whose role became a member of postgres issues nothing');
RESET ROLE;
REVOKE postgres FROM tb_rw;
SELECT is((SELECT count(*) FROM keysmith.lease WHERE template = 'tb_later'), 0::bigint, 'no lease was written');

-- finding 8: durations are compared as points in time
SET ROLE tb_issuer;
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('tb_later', '1 year')$$,
    'KS011', 'requested ttl exceeds the max_ttl of template "tb_later"',
    'under max_ttl 360 days, 1 year (365 days) is refused');
SELECT throws_ok($$SELECT * FROM keysmith.issue_role('tb_later', '1 mon -40 days')$$,
    '22023', 'lease ttl must be positive', 'a ttl that ends before it starts');
SELECT lives_ok($$SELECT * FROM keysmith.issue_role('tb_later', '359 days')$$, 'within max_ttl is fine');
RESET ROLE;

-- finding 3: owner_role is one of member_of, never anyone more powerful
SELECT throws_ok($$SELECT keysmith.create_role_template('tb2', ARRAY['tb_rw'], options => '{"owner_role": "postgres"}')$$,
    '22023', 'owner_role "postgres" is not one of the template''s member_of roles',
    'a superuser may not make postgres the owner_role');
SET ROLE tb_admin;
SELECT throws_ok($$SELECT keysmith.create_role_template('tb2', ARRAY['tb_rw'], options => '{"owner_role": "keysmith_admin"}')$$,
    '22023', 'owner_role "keysmith_admin" is not one of the template''s member_of roles',
    'an admin may not make keysmith_admin the owner_role');
SELECT lives_ok($$SELECT keysmith.create_role_template('tb_own', ARRAY['tb_rw'], '1 hour', '2 hours',
    '{"owner_role": "tb_rw", "issuers": ["tb_issuer"]}')$$, 'owner_role from member_of is accepted');
RESET ROLE;

-- the attack: a lease plants a SECURITY DEFINER function, then is revoked
SET ROLE tb_issuer;
CREATE TEMP TABLE tb_issued AS SELECT * FROM keysmith.issue_role('tb_own');
RESET ROLE;
SELECT set_config('tb.u', (SELECT username FROM tb_issued), true);
DO $$ BEGIN EXECUTE format('SET ROLE %I', current_setting('tb.u')); END $$;
CREATE FUNCTION public.tb_planted() RETURNS text LANGUAGE sql SECURITY DEFINER AS $f$ SELECT current_user::text $f$;
RESET ROLE;
SELECT keysmith.revoke_lease((SELECT lease_id FROM tb_issued));
SELECT is((SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE proname = 'tb_planted'), 'tb_rw',
    'the planted function now belongs to tb_rw, a role the lease could already act as');
SELECT is((SELECT state FROM keysmith.lease WHERE lease_id = (SELECT lease_id FROM tb_issued)), 'revoked',
    'and the lease is revoked');

-- a lease written before 0.3 may name an unsafe owner_role: revocation
-- then drops the objects rather than give them to a superuser
SET ROLE tb_issuer;
CREATE TEMP TABLE tb_old AS SELECT * FROM keysmith.issue_role('tb_own');
RESET ROLE;
UPDATE keysmith.lease SET owner_role = 'postgres' WHERE lease_id = (SELECT lease_id FROM tb_old);
SELECT set_config('tb.u', (SELECT username FROM tb_old), true);
DO $$ BEGIN EXECUTE format('SET ROLE %I', current_setting('tb.u')); END $$;
CREATE FUNCTION public.tb_planted_old() RETURNS text LANGUAGE sql SECURITY DEFINER AS $f$ SELECT current_user::text $f$;
RESET ROLE;
SELECT is((SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE proname = 'tb_planted_old'), (SELECT username::text FROM tb_old),
    'setup: the old lease owns a planted function');
SELECT keysmith.revoke_lease((SELECT lease_id FROM tb_old));
SELECT is((SELECT count(*) FROM pg_proc WHERE proname = 'tb_planted_old'), 0::bigint,
    'revocation dropped it instead of giving it to superuser postgres');

SELECT * FROM finish();
ROLLBACK;
