#!/usr/bin/env bash
# test/integration/owner_jobs.sh
#
# Issue 20, findings 1, 4 and 7: code a role supplies runs as that role in
# a process of its own (rotator/owner_job.c), never in the superuser
# rotation worker, and nothing a role or database owner controls can stop
# or redirect the workers.  Each attack is performed first:
#   * a sql step function sees the owner as session_user (it saw the
#     bootstrap superuser), and through it a keysmith_user could issue from
#     a template it is not an issuer of, and a keysmith_admin could create a
#     template reaching a CREATEROLE role it does not administer (then
#     pg_execute_server_program, then COPY TO PROGRAM): both refused;
#   * SET SESSION AUTHORIZATION back to the superuser the job connected as;
#   * a registered context_expr, run by scheduled re-encryption, sees its
#     registrant as session_user;
#   * a step function that sleeps and swallows query_canceled: the job is
#     ended at keysmith.rotation_step_timeout, and another owner's rotation
#     started at the same moment finishes (how late is printed);
#   * a database owner's ALTER DATABASE ... SET default_transaction_read_only,
#     statement_timeout, lock_timeout, exit_on_error, role, search_path,
#     transform_null_equals, temp_tablespaces (and a superuser's
#     session_replication_role), then a restart: rotations finish and an
#     expired lease is revoked.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 13

dir=$KS_WORK/extra-owner-jobs
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.reaper_naptime = '200ms'"
    echo "keysmith.rotation_step_timeout = '2s'"
    echo "keysmith.rotation_max_attempts = 2"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
rotate() { q -c "SET ROLE $1" -c "SELECT keysmith.rotate_secret('$2')"; }
last_error() { q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$1'"; }

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('oj');
CREATE ROLE oj_user LOGIN IN ROLE keysmith_user;
CREATE ROLE oj_admin NOLOGIN IN ROLE keysmith_admin, keysmith_user;
CREATE ROLE oj_victim NOLOGIN IN ROLE keysmith_user;
CREATE ROLE oj_issuer NOLOGIN;
CREATE ROLE oj_rw NOLOGIN;
CREATE ROLE oj_creator NOLOGIN CREATEROLE;
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO PUBLIC;
GRANT CREATE ON SCHEMA app TO oj_user, oj_victim;
CREATE TABLE app.who (what text, session_u text, current_u text, super text);
GRANT INSERT ON app.who TO PUBLIC;
SELECT keysmith.create_role_template('guarded', ARRAY['oj_rw'], '1 hour', '1 hour', '{"issuers": ["oj_issuer"]}');

-- the attacker's step functions, each owned by its secret's owner
CREATE FUNCTION app.whoami(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.who VALUES ('step:' || step, session_user, current_user, current_setting('is_superuser'));
END $$;
CREATE FUNCTION app.lease_grab(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM * FROM keysmith.issue_role('guarded');
END $$;
CREATE FUNCTION app.template_grab(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keysmith.create_role_template('escalate', ARRAY['oj_creator'], '1 hour', '1 hour',
                                          '{"allow_role_attributes": true}');
END $$;
CREATE FUNCTION app.become_super(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    SET SESSION AUTHORIZATION postgres;
    INSERT INTO app.who VALUES ('became', session_user, current_user, current_setting('is_superuser'));
END $$;
-- sleeps, and swallows the cancel that statement_timeout sends
CREATE FUNCTION app.stall(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    SET statement_timeout = 0;
    LOOP
        BEGIN
            PERFORM pg_catalog.pg_sleep(1000);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
END $$;
ALTER FUNCTION app.whoami OWNER TO oj_user;
ALTER FUNCTION app.lease_grab OWNER TO oj_user;
ALTER FUNCTION app.template_grab OWNER TO oj_admin;
ALTER FUNCTION app.become_super OWNER TO oj_user;
ALTER FUNCTION app.stall OWNER TO oj_user;
SELECT keysmith.grant_key('oj', 'oj_user', 'encrypt');
SELECT keysmith.grant_key('oj', 'oj_user', 'decrypt');
SELECT keysmith.grant_key('oj', 'oj_victim', 'encrypt');
SELECT keysmith.grant_key('oj', 'oj_victim', 'decrypt');
SELECT keysmith.grant_key('oj', 'oj_admin', 'encrypt');
SELECT keysmith.grant_key('oj', 'oj_admin', 'decrypt');
SET ROLE oj_user;
SELECT keysmith.create_secret('oj/whoami', 'oj', 'sql', '{"function": "app.whoami"}', 'v0');
SELECT keysmith.create_secret('oj/lease', 'oj', 'sql', '{"function": "app.lease_grab"}', 'v0');
SELECT keysmith.create_secret('oj/super', 'oj', 'sql', '{"function": "app.become_super"}', 'v0');
SELECT keysmith.create_secret('oj/stall', 'oj', 'sql', '{"function": "app.stall"}', 'v0');
SET ROLE oj_admin;
SELECT keysmith.create_secret('oj/template', 'oj', 'sql', '{"function": "app.template_grab"}', 'v0');
SET ROLE oj_victim;
CREATE FUNCTION app.victim(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE sql AS $$ SELECT NULL::void $$;
SELECT keysmith.create_secret('oj/victim', 'oj', 'sql', '{"function": "app.victim"}', 'v0');
RESET ROLE;
SQL
ks_check $? "setup: a keysmith_user, a non-superuser keysmith_admin and a victim own sql secrets"

tok=$(rotate oj_user oj/whoami)
st=$(ks_wait_rotation "$tok")
who=$(q -c "SELECT string_agg(DISTINCT session_u || '/' || current_u || '/' || super, ',') FROM app.who WHERE what LIKE 'step:%'")
[ "$st" = finished ] && [ "$who" = "oj_user/oj_user/off" ]
ks_check $? "finding 1: a step function's session_user and current_user are its owner, not a superuser ($st; $who)"

tok=$(rotate oj_user oj/lease)
st=$(ks_wait_rotation "$tok")
e=$(last_error "$tok")
n=$(q -c "SELECT count(*) FROM keysmith.lease")
[ "$st" = failed ] && [ "$n" = 0 ] && [[ $e == *"security-restricted operation"* || $e == *"permission denied"* ]]
ks_check $? "finding 1: issue_role from a step function, for a template its owner may not issue from, is refused ($st, $n leases: $e)"

tok=$(rotate oj_admin oj/template)
st=$(ks_wait_rotation "$tok")
e=$(last_error "$tok")
n=$(q -c "SELECT count(*) FROM keysmith.role_template WHERE name = 'escalate'")
[ "$st" = failed ] && [ "$n" = 0 ] && [ "$(q -c "SELECT pg_has_role('oj_admin', 'pg_execute_server_program', 'MEMBER')")" = f ]
ks_check $? "finding 1: a keysmith_admin's step function cannot create a template reaching a CREATEROLE role it does not administer ($st, $n templates: $e)"

tok=$(rotate oj_user oj/super)
st=$(ks_wait_rotation "$tok")
e=$(last_error "$tok")
[ "$st" = failed ] && [ "$(q -c "SELECT count(*) FROM app.who WHERE what = 'became'")" = 0 ] &&
    [[ $e == *"session_authorization"* ]]
ks_check $? "SET SESSION AUTHORIZATION back to the superuser the job connected as is refused ($e)"

# --- a context_expr, run by scheduled re-encryption, as its registrant
q <<'SQL' >/dev/null
CREATE TABLE app.t (id int PRIMARY KEY, c bytea);
ALTER TABLE app.t OWNER TO oj_user;
SET ROLE oj_user;
INSERT INTO app.t SELECT i, keysmith.encrypt_value('oj', 'v' || i, i::text) FROM generate_series(1, 50) i;
CREATE FUNCTION app.ctx(i int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.who VALUES ('ctx', session_user, current_user, current_setting('is_superuser'));
    RETURN i::text;
END $$;
SELECT keysmith.register_column('app.t', 'c', 'oj', 'app.ctx(id)');
RESET ROLE;
SELECT keysmith.schedule_key_rotation('oj', '30 days', true, NULL, now() - interval '30 days 1 minute');
SQL
ks_wait_for "SELECT NOT reencrypt_pending AND last_done_at IS NOT NULL FROM keysmith.encrypted_columns WHERE tbl = 'app.t'::regclass"
done=$?
who=$(q -c "SELECT string_agg(DISTINCT session_u || '/' || current_u || '/' || super, ',') FROM app.who WHERE what = 'ctx'")
ok=$(q -c "SET ROLE oj_user" -c "SELECT count(*) FROM app.t WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ $done = 0 ] && [ "$who" = "oj_user/oj_user/off" ] && [ "$ok" = 50 ]
ks_check $? "finding 1: a context_expr run by scheduled re-encryption sees its registrant as session_user ($who; $ok of 50 rows intact)"

# --- finding 4: one owner's stalling function and another owner's rotation, started together
t0=$(date +%s.%N)
stall=$(rotate oj_user oj/stall)
victim=$(rotate oj_victim oj/victim)
vst=$(ks_wait_rotation "$victim")
t1=$(date +%s.%N)
late=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
echo "# the victim's rotation finished ${late} s after both were started (rotation_step_timeout = 2 s)"
# not a timed assertion: the victim must finish before the stalling
# function's second deadline, counted in the audit trail's order
before=$(q -c "SELECT count(*) FROM keysmith.rotation_event WHERE token = '$stall' AND event = 'step_failed'
                 AND event_id < (SELECT event_id FROM keysmith.rotation_event
                                  WHERE token = '$victim' AND event = 'finished')")
[ "$vst" = finished ] && [ "$before" -le 1 ]
ks_check $? "finding 4: another owner's rotation finishes within one deadline of a stalling step function ($vst after $before of its deadlines, ${late} s)"
for _ in $(seq 1 300); do
    sst=$(q -c "SELECT state FROM keysmith.rotations WHERE token = '$stall'")
    [ "$sst" = failed ] && break
    sleep 0.1
done
e=$(last_error "$stall")
[ "$sst" = failed ] && [[ $e == *"did not finish within keysmith.rotation_step_timeout"* ]]
ks_check $? "the stalling function is ended at the deadline every attempt and its rotation fails ($sst: $e)"
ks_wait_for "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'keysmith owner job'" 100
ks_check $? "no owner job is left running"

# --- finding 7: what a database owner sets for every session there
q <<'SQL' >/dev/null
CREATE ROLE oj_dbowner LOGIN;
ALTER DATABASE postgres OWNER TO oj_dbowner;
CREATE ROLE oj_pair_owner NOLOGIN;
CREATE ROLE oj_target LOGIN IN ROLE oj_pair_owner;
GRANT oj_target TO oj_user WITH ADMIN OPTION;
CREATE ROLE oj_lease_rw NOLOGIN;
SELECT keysmith.create_role_template('short', ARRAY['oj_lease_rw'], '1 second', '1 hour');
SET ROLE oj_user;
SELECT keysmith.create_secret('oj/role', 'oj', 'postgres_role', '{"role": "oj_target"}');
RESET ROLE;
SET ROLE oj_dbowner;
ALTER DATABASE postgres SET default_transaction_read_only = on;
ALTER DATABASE postgres SET statement_timeout = '20ms';
ALTER DATABASE postgres SET lock_timeout = '1ms';
ALTER DATABASE postgres SET exit_on_error = on;
ALTER DATABASE postgres SET role = 'oj_dbowner';
ALTER DATABASE postgres SET search_path = 'app';
ALTER DATABASE postgres SET transform_null_equals = on;
ALTER DATABASE postgres SET temp_tablespaces = 'nosuch';
RESET ROLE;
ALTER DATABASE postgres SET session_replication_role = replica;
SQL
ks_check $? "a non-superuser database owner sets what every session in keysmith's database starts with"
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
# the test's own sessions undo it for themselves
export PGOPTIONS="-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 -c exit_on_error=off -c role=none -c search_path=public -c transform_null_equals=off -c temp_tablespaces= -c session_replication_role=origin"
lease=$(q -F ' ' -c "SELECT lease_id, username FROM keysmith.issue_role('short', '1 second')")
read -r lid luser <<<"$lease"
tok=$(rotate oj_user oj/role)
st=$(ks_wait_rotation "$tok")
tok2=$(rotate oj_victim oj/victim)
st2=$(ks_wait_rotation "$tok2")
[ "$st" = finished ] && [ "$st2" = finished ]
ks_check $? "after a restart with those settings, a role rotation and a sql-strategy rotation finish ($st, $st2: $(last_error "$tok"))"
ks_wait_for "SELECT state = 'revoked' FROM keysmith.lease WHERE lease_id = '$lid'" 150 &&
    [ "$(q -c "SELECT count(*) FROM pg_roles WHERE rolname = '$luser'")" = 0 ]
ks_check $? "and the reaper revokes an expired lease and drops its role"
q -c "ALTER DATABASE postgres RESET ALL" >/dev/null
unset PGOPTIONS
ks_check $? "the database's settings are reset"

ks_cluster_stop "$dir"
