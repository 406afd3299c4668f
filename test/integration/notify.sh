#!/usr/bin/env bash
# test/integration/notify.sh
#
# Rotation notifications and the audit trail's acting role, on a real
# server with the rotation worker (issue 20, findings 11 and 13):
#   * the attack: roles that cannot read a secret (eve, a plain keysmith
#     user with a secret of its own, and rot_only, which holds rotate but
#     not read) LISTEN on keysmith_rotation, the channel every 0.9 finish
#     announced every secret's name and version on, and on every channel
#     they can learn (eve's own secret's).  A rotation and a
#     put_secret_value later they have received nothing;
#   * a reader that asked keysmith.secret_channel() for its secrets'
#     channels hears {"event": "rotated"} there at each new version, a
#     payload that names nothing, and the secret gets a new channel;
#   * secret_channel refuses a non-reader with 42501, for a secret that
#     exists and for one that does not alike;
#   * revoking read gives the secret a new channel: the old one hears one
#     last "channel_changed" and nothing after;
#   * the red team's attack (redteam.sh check 4): a reader learns the
#     channel, loses read outside keysmith (REVOKE grp FROM role) and keeps
#     listening through two new versions: it hears one payload naming
#     nothing, then nothing.  A reader that follows the documented pattern
#     (ask secret_channel again at each notification) hears both;
#   * in one worker round with alice's rotation, bob's sql step function
#     calls keysmith itself (which, through 0.9's process-wide actor, made
#     the worker record alice's steps as bob's): every event of alice's
#     rotation names alice, every event of bob's names bob.
# Listeners are test/integration/notify_listen.py (psycopg2); they stop at
# a barrier notification sent after the watched rotations finished, so no
# check depends on timing.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 16

dir=$KS_WORK/extra-notify
ks_cluster_init "$dir"
echo "keysmith.rotation_naptime = '200ms'" >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
# wait_for SQL: until SQL returns t (every 0.1 s, 30 s at most)
wait_for() {
    for _ in $(seq 1 300); do
        [ "$(q -c "$1" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}
# listen NAME ROLE CHANNEL...: a listener in the background, once it listens
listen() {
    local name=$1 role=$2
    shift 2
    rm -f "$KS_WORK/$name.ready"
    /usr/bin/python3 "$ROOT/test/integration/notify_listen.py" "$PGHOST" "$PGPORT" "$role" \
        "$KS_WORK/$name.out" "$KS_WORK/$name.ready" "$@" 2>"$KS_WORK/$name.err" &
    eval "pid_$name=$!"
    for _ in $(seq 1 300); do
        [ -e "$KS_WORK/$name.ready" ] && return 0
        sleep 0.1
    done
    return 1
}
# barrier: end every listener, after everything committed before it
barrier() {
    q -c "NOTIFY ks_test_barrier"
    for p in "$@"; do wait "$p"; done
}

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('creds');
CREATE ROLE app LOGIN;
CREATE ROLE alice LOGIN IN ROLE keysmith_user;
GRANT app TO alice WITH ADMIN OPTION;
CREATE ROLE bob LOGIN IN ROLE keysmith_user;
CREATE ROLE eve LOGIN IN ROLE keysmith_user;
CREATE ROLE rot_only LOGIN IN ROLE keysmith_user;
CREATE ROLE reader LOGIN IN ROLE keysmith_user;
CREATE ROLE kadmin LOGIN IN ROLE keysmith_admin;
CREATE ROLE readers NOLOGIN;
CREATE ROLE former LOGIN IN ROLE keysmith_user, readers;
CREATE SCHEMA bobs AUTHORIZATION bob;
SET ROLE alice;
SELECT keysmith.create_secret('db/app', 'creds', 'postgres_role', '{"role": "app"}');
SELECT keysmith.create_secret('db/token', 'creds', 'none', '{}', 'token-1');
SELECT keysmith.grant_secret('db/app', 'reader', 'read');
SELECT keysmith.grant_secret('db/token', 'reader', 'read');
SELECT keysmith.grant_secret('db/token', 'readers', 'read');
SELECT keysmith.grant_secret('db/app', 'rot_only', 'rotate');
SET ROLE eve;
SELECT keysmith.create_secret('eve/own', 'creds', 'none', '{}', 'eve-1');
SET ROLE bob;
CREATE TABLE bobs.calls (step text, note text);
-- the step function calls keysmith itself, in the worker's round
CREATE FUNCTION bobs.rot(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM keysmith.get_secret('bob/own');
        INSERT INTO bobs.calls VALUES (step, 'read');
    EXCEPTION WHEN others THEN
        INSERT INTO bobs.calls VALUES (step, SQLERRM);
    END;
END $$;
SELECT keysmith.create_secret('bob/own', 'creds', 'none', '{}', 'bob-1');
SELECT keysmith.create_secret('bob/fn', 'creds', 'sql', '{"function": "bobs.rot"}', 'bob-fn-1');
SQL
ks_check $? "setup: alice's secrets, read granted to reader (and on db/token to readers), rotate only to rot_only; eve's and bob's own"

# 1. the channel, and who may have it
ch_app=$(q -U reader -c "SELECT keysmith.secret_channel('db/app')")
ch_token=$(q -U reader -c "SELECT keysmith.secret_channel('db/token')")
ch_eve=$(q -U eve -c "SELECT keysmith.secret_channel('eve/own')")
[[ $ch_app =~ ^keysmith_rotation_[0-9a-f]{32}$ ]] && [ ${#ch_app} -lt 64 ] &&
    [ "$(q -U alice -c "SELECT keysmith.secret_channel('db/app')")" = "$ch_app" ] &&
    [ "$ch_app" != "$ch_token" ] && [ "$ch_app" != "$ch_eve" ] && [ "$ch_token" != "$ch_eve" ]
ks_check $? "secret_channel: keysmith_rotation_ and 32 hex digits, one per secret, the same for every reader"

e1=$(qv -U eve -c "SELECT keysmith.secret_channel('db/app')")
e2=$(qv -U eve -c "SELECT keysmith.secret_channel('no/such')")
e3=$(qv -U rot_only -c "SELECT keysmith.secret_channel('db/app')")
ks_sqlstate 42501 'permission denied for secret "db/app"' "$e1" &&
    ks_sqlstate 42501 'permission denied for secret "no/such"' "$e2" &&
    ks_sqlstate 42501 'permission denied for secret "db/app"' "$e3" &&
    [ "${e1//db\/app/X}" = "${e2//no\/such/X}" ]
ks_check_out $? "$e1 / $e2 / $e3" "secret_channel refuses a non-reader (42501), a missing secret alike, and rotate without read"
e4=$(qv -U kadmin -c "SELECT keysmith.secret_channel('no/such')")
ks_sqlstate 42704 'secret "no/such" does not exist' "$e4"
ks_check_out $? "$e4" "a keysmith admin, who sees every secret's name, learns that one does not exist (42704)"

# 2. the attack: non-readers listen on everything they know
listen eve eve keysmith_rotation "$ch_eve" || echo "# eve's listener did not start"
listen rot rot_only keysmith_rotation || echo "# rot_only's listener did not start"
listen reader reader "$ch_app" "$ch_token" || echo "# the reader's listener did not start"
toks=$(q <<'SQL'
BEGIN;
SET ROLE alice;
SELECT keysmith.rotate_secret('db/app');
RESET ROLE;
SET ROLE bob;
SELECT keysmith.rotate_secret('bob/fn');
COMMIT;
SQL
)
tok_a=$(sed -n 1p <<<"$toks")
tok_b=$(sed -n 2p <<<"$toks")
st_a=$(ks_wait_rotation "$tok_a")
st_b=$(ks_wait_rotation "$tok_b")
v_token=$(q -U alice -c "SELECT keysmith.put_secret_value('db/token', 'token-2')")
barrier "$pid_eve" "$pid_rot" "$pid_reader"
[ "$st_a" = finished ] && [ "$st_b" = finished ]
ks_check $? "alice's and bob's rotations, requested together, finished ($st_a, $st_b)"

v_app=$(q -c "SELECT current_version FROM keysmith.secrets WHERE name = 'db/app'")
want=$(printf '%s\t{"event": "rotated"}\n%s\t{"event": "rotated"}' "$ch_app" "$ch_token")
got=$(cat "$KS_WORK/reader.out")
[ "$got" = "$want" ] && [[ $v_token =~ ^[0-9a-f-]{36}$ ]]
ks_check_out $? "$got" "the reader heard each new version on its secrets' channels, once, in a payload that names nothing"
ch_app2=$(q -U reader -c "SELECT keysmith.secret_channel('db/app')")
ch_token2=$(q -U reader -c "SELECT keysmith.secret_channel('db/token')")
[[ $ch_app2 =~ ^keysmith_rotation_[0-9a-f]{32}$ ]] && [[ $ch_token2 =~ ^keysmith_rotation_[0-9a-f]{32}$ ]] &&
    [ "$ch_app2" != "$ch_app" ] && [ "$ch_token2" != "$ch_token" ] && [ "$ch_app2" != "$ch_token2" ]
ks_check_out $? "$ch_app2 $ch_token2" "a rotation's finish and a put_secret_value each gave the secret a new channel"
got=$(cat "$KS_WORK/eve.out" "$KS_WORK/rot.out" "$KS_WORK/eve.err" "$KS_WORK/rot.err")
[ -z "$got" ] && [ -e "$KS_WORK/eve.ready" ] && [ -e "$KS_WORK/rot.ready" ]
ks_check_out $? "$got" "non-readers listening on keysmith_rotation and on their own channels heard nothing"

# 3. the acting role of the worker's events
ev=$(q -c "SELECT string_agg(event || ':' || acting_role, ',' ORDER BY event_id) FROM keysmith.rotation_event
            WHERE token = '$tok_a'")
cb=$(q -c "SELECT created_by FROM keysmith.secret_versions WHERE version_id = '$v_app'")
[ "$ev" = "requested:alice,created:alice,set:alice,tested:alice,finished:alice" ] && [ "$cb" = alice ]
ks_check_out $? "$ev / $cb" "every event of alice's rotation, and its version, name alice"
ev=$(q -c "SELECT string_agg(DISTINCT acting_role, ',') FROM keysmith.rotation_event WHERE token = '$tok_b'")
calls=$(q -c "SELECT string_agg(step || ':' || note, ',' ORDER BY step) FROM bobs.calls")
[ "$ev" = bob ] && [[ $calls == *"create:read"* ]]
ks_check_out $? "$ev / $calls" "bob's step function called keysmith in that round, and bob's events name bob only"

# 4. read revoked: a new channel, and the old one hears only that
ch_app=$ch_app2
listen old reader "$ch_app" || echo "# a listener did not start"
q -U alice -c "SELECT keysmith.revoke_secret('db/app', 'reader', 'read')" >/dev/null
ch_new=$(q -U alice -c "SELECT keysmith.secret_channel('db/app')")
e5=$(qv -U reader -c "SELECT keysmith.secret_channel('db/app')")
[[ $ch_new =~ ^keysmith_rotation_[0-9a-f]{32}$ ]] && [ "$ch_new" != "$ch_app" ] &&
    ks_sqlstate 42501 'permission denied for secret "db/app"' "$e5"
ks_check_out $? "$ch_new / $e5" "revoking read gives the secret a new channel, which the former reader cannot get"
listen new alice "$ch_new" || echo "# a listener did not start"
tok=$(q -U alice -c "SELECT keysmith.rotate_secret('db/app')")
st=$(ks_wait_rotation "$tok")
barrier "$pid_old" "$pid_new"
got=$(cat "$KS_WORK/old.out")
[ "$got" = "$(printf '%s\t{"event": "channel_changed"}' "$ch_app")" ]
ks_check_out $? "$got" "the old channel heard channel_changed, and nothing of the next rotation"
got=$(cat "$KS_WORK/new.out")
[ "$st" = finished ] && [ "$got" = "$(printf '%s\t{"event": "rotated"}' "$ch_new")" ]
ks_check_out $? "$st: $got" "the next rotation is announced on the new channel"

# 5. the red team's attack: read lost outside keysmith, the channel kept
ch_f=$(q -U former -c "SELECT keysmith.secret_channel('db/token')")
listen follower reader "follow:db/token" || echo "# the follower did not start"
q -c "REVOKE readers FROM former"
e6=$(qv -U former -c "SELECT keysmith.secret_channel('db/token')")
listen former former "$ch_f" || echo "# the former reader's listener did not start"
[[ $ch_f =~ ^keysmith_rotation_[0-9a-f]{32}$ ]] && ks_sqlstate 42501 'permission denied for secret "db/token"' "$e6"
ks_check_out $? "$ch_f / $e6" "a member of readers learned db/token's channel, and lost read with REVOKE readers FROM former"
q -U alice -c "SELECT keysmith.put_secret_value('db/token', 'token-3')" >/dev/null
# the follower moves to the new channel before the next version
for _ in $(seq 1 300); do
    [ "$(wc -l <"$KS_WORK/follower.out")" -ge 1 ] && break
    sleep 0.1
done
q -U alice -c "SELECT keysmith.put_secret_value('db/token', 'token-4')" >/dev/null
barrier "$pid_former" "$pid_follower"
got=$(cat "$KS_WORK/former.out" "$KS_WORK/former.err")
[ "$got" = "$(printf '%s\t{"event": "rotated"}' "$ch_f")" ]
ks_check_out $? "$got" "the former reader heard one payload naming nothing on the channel it kept, then nothing of the next version"
got=$(cat "$KS_WORK/follower.out" "$KS_WORK/follower.err")
[ "$got" = "$(printf 'db/token\t{"event": "rotated"}\ttoken-3\ndb/token\t{"event": "rotated"}\ttoken-4')" ]
ks_check_out $? "$got" "a reader that asks secret_channel again at each notification hears both versions and reads each"

ks_cluster_stop "$dir"
