#!/usr/bin/env bash
# test/integration/rotation_sql.sh
#
# The sql strategy on a real server.  A non-superuser owns a secret whose
# function rotates an API key kept in a table: after a rotation the new key
# is the only active one and is current.  A function that fails at test:
# the rotation retries, ends failed, and current is untouched and still the
# active key.  A function that tries ALTER ROLE ... SUPERUSER and CREATE
# TEMP TABLE (the attacks) fails: it runs as the owner with
# SECURITY_RESTRICTED_OPERATION, never as the worker's superuser.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 11

dir=$KS_WORK/extra-rotation-sql
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.rotation_max_attempts = 2"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('api');
CREATE ROLE sq_owner LOGIN IN ROLE keysmith_user;
CREATE SCHEMA app AUTHORIZATION sq_owner;
SET ROLE sq_owner;
CREATE TABLE app.api_keys (key text PRIMARY KEY, active boolean NOT NULL);
INSERT INTO app.api_keys VALUES ('key-0', true);
-- the rotation function: set adds the new key, test checks it, finish
-- retires every other key
CREATE FUNCTION app.rotate_api(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF step = 'set' THEN
        INSERT INTO app.api_keys VALUES (pending, true) ON CONFLICT (key) DO NOTHING;
    ELSIF step = 'test' THEN
        IF NOT EXISTS (SELECT 1 FROM app.api_keys WHERE key = pending AND active) THEN
            RAISE EXCEPTION 'the new key is not active';
        END IF;
    ELSIF step = 'finish' THEN
        UPDATE app.api_keys SET active = (key = pending);
    END IF;
END $$;
CREATE FUNCTION app.rotate_failing(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF step = 'test' THEN
        RAISE EXCEPTION 'the API rejects the new key';
    END IF;
END $$;
CREATE FUNCTION app.rotate_evil(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    ALTER ROLE sq_owner SUPERUSER;
END $$;
CREATE FUNCTION app.rotate_temp(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE stolen AS SELECT pending AS v;
END $$;
SELECT keysmith.create_secret('api/main', 'api', 'sql', '{"function": "app.rotate_api"}', 'key-0');
SELECT keysmith.create_secret('api/failing', 'api', 'sql', '{"function": "app.rotate_failing"}', 'fail-0');
SELECT keysmith.create_secret('api/evil', 'api', 'sql', '{"function": "app.rotate_evil"}', 'evil-0');
SELECT keysmith.create_secret('api/temp', 'api', 'sql', '{"function": "app.rotate_temp"}', 'temp-0');
RESET ROLE;
SQL
ks_check $? "setup: a non-superuser owns four sql-strategy secrets and their functions"

tok=$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.rotate_secret('api/main')")
st=$(ks_wait_rotation "$tok")
[ "$st" = finished ]; ks_check $? "a rotation by the function runs create, set, test, finish ($st)"
cur=$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.get_secret('api/main')")
act=$(q -c "SELECT string_agg(key, ',') FROM app.api_keys WHERE active")
[ "$act" = "$cur" ] && [ ${#cur} = 32 ] && [ "$cur" != key-0 ]
ks_check $? "the new 32-character key is current and the only active key"
[ "$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.get_secret('api/main', 'previous')")" = key-0 ]
ks_check $? "the old key is previous"
ev=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[ "$ev" = requested,created,set,tested,finished ]; ks_check $? "each step once in the trail ($ev)"

tok=$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.rotate_secret('api/failing')")
st=$(ks_wait_rotation "$tok")
r=$(q -c "SELECT attempts || ':' || last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = failed ] && [ "$r" = "2:the API rejects the new key" ]
ks_check $? "a function that fails at test: retried, then failed, the error kept ($st, $r)"
[ "$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.get_secret('api/failing')")" = fail-0 ] &&
    [ -z "$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.get_secret('api/failing', 'pending')")" ]
ks_check $? "current is untouched and nothing is pending"

tok=$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.rotate_secret('api/evil')")
st=$(ks_wait_rotation "$tok")
e=$(q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = failed ] && [ "$e" = "must be superuser to alter superuser roles or change superuser attribute" ]
ks_check $? "attack: the function's ALTER ROLE ... SUPERUSER runs as the owner and is refused ($e)"
[ "$(q -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'sq_owner'")" = f ]
ks_check $? "the owner is still no superuser"
[ "$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.get_secret('api/evil')")" = evil-0 ]
ks_check $? "and its secret is untouched"
tok=$(q -c "SET ROLE sq_owner" -c "SELECT keysmith.rotate_secret('api/temp')")
st=$(ks_wait_rotation "$tok")
e=$(q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = failed ] && [[ $e == *"cannot create temporary table within security-restricted operation"* ]]
ks_check $? "attack: a temporary table to keep the value is refused inside the restricted operation ($e)"

ks_cluster_stop "$dir"
