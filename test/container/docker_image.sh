#!/usr/bin/env bash
# test/container/docker_image.sh
#
# The Docker image and docker/compose.yaml on a real engine (dockerd from
# Debian's docker.io, started here if none runs, with no bridge and no
# firewall rules): every build and container uses host networking and the
# servers listen on 127.0.0.1 only.
#  - The default compose networking publishes on 127.0.0.1 only and puts no
#    secret in the environment.
#  - The image builds from a Debian 12 base (debian:12, or one made here by
#    debootstrap when the registry is unreachable); the runtime stage has
#    no compiler and runs as postgres; the build context holds no .git and
#    no build output.
#  - The entrypoint's refusals: no master key, a password in the
#    environment, a key readable by others.  KEYSMITH_GENERATE_MASTER_KEY=1
#    puts the key in its own volume, never in the data volume.
#  - compose (docker compose, or Debian's docker-compose 1.29) brings up a
#    primary and a streaming replica: CREATE EXTENSION, an encrypt/decrypt
#    round trip, decrypt on the replica (encrypt refused there), a leased
#    role logging in over TCP on both, and a restart keeping data and key.
#  - Everything started is removed at the end, volumes included.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/container/lib.sh"
ks_plan 21

W=${KS_WORK:-/tmp}/docker-image
rm -rf "$W"
mkdir -p "$W"
PROJECT=kstest$$
IMAGE=keysmith-test:$$
RUNS=()
T0=$SECONDS

cleanup() {
    [ -n "${COMPOSE:-}" ] && compose down -v --remove-orphans >/dev/null 2>&1
    for c in "${RUNS[@]}"; do
        kc_docker rm -f -v "$c" >/dev/null 2>&1
        kc_docker volume rm -f "$c-data" "$c-keys" >/dev/null 2>&1
    done
    kc_docker image rm -f "$IMAGE" "$IMAGE-build" >/dev/null 2>&1
    kc_engine_down
    echo "# docker suite took $((SECONDS - T0)) s"
}

kc_engine_up >"$W/engine.log" 2>&1
ks_check_out $? "$(cat "$W/engine.log")" "a Docker engine answers (dockerd started here if none ran)" || exit 1
BASE=$(kc_base_image 2>"$W/base.err")
ks_check_out $? "$(cat "$W/base.err")" "a Debian 12 base image: ${BASE:-none}" || exit 1

if kc_docker compose version >/dev/null 2>&1; then
    COMPOSE=(kc_docker compose)
else
    COMPOSE=(docker-compose)
fi
echo "# compose: $("${COMPOSE[@]}" version 2>/dev/null | head -1)"
export KEYSMITH_SECRETS=$W/secrets KEYSMITH_IMAGE=$IMAGE KEYSMITH_BASE_IMAGE=$BASE
KEYSMITH_PRIMARY_PORT=$(ks_free_port)
KEYSMITH_REPLICA_PORT=$(ks_free_port)
export KEYSMITH_PRIMARY_PORT KEYSMITH_REPLICA_PORT
compose() {
    "${COMPOSE[@]}" -p "$PROJECT" \
        -f "$ROOT/docker/compose.yaml" -f "$ROOT/docker/compose.host.yaml" "$@"
}
bash "$ROOT/docker/make-secrets.sh" "$KEYSMITH_SECRETS" >/dev/null

# --- the default networking, as a user gets it ------------------------------
cfg=$(cd "$ROOT/docker" && "${COMPOSE[@]}" -p "$PROJECT" config 2>&1)
pubs=$(grep -cE '127\.0\.0\.1:[0-9]+:5432|host_ip: 127\.0\.0\.1' <<<"$cfg")
[ "$pubs" = 2 ] && ! grep -qE '0\.0\.0\.0|PASSWORD:' <<<"$cfg"
ks_check_out $? "$cfg" "default compose publishes both servers on 127.0.0.1 only, no password in the environment"

# --- build --------------------------------------------------------------------
t=$SECONDS
out=$(compose build primary 2>&1)
rc=$?
echo "# image build took $((SECONDS - t)) s"
ks_check_out $rc "$(tail -20 <<<"$out")" "the image builds (multi-stage, base $BASE, host network)"
out=$(kc_docker run --rm --network none --entrypoint sh "$IMAGE" -c \
    'id -un; id -u; for c in gcc cc clang make; do command -v $c; done; ls -d /src 2>/dev/null; true' 2>&1)
[ "$out" = "$(printf 'postgres\n999')" ]
ks_check_out $? "$out" "the runtime stage runs as postgres (uid 999) and has no compiler and no sources"
out=$(kc_docker build -q --network host --target build --build-arg BASE_IMAGE="$BASE" \
        -f "$ROOT/docker/Dockerfile" -t "$IMAGE-build" "$ROOT" 2>&1 >/dev/null &&
    kc_docker run --rm --network none --entrypoint sh "$IMAGE-build" -c \
        'cd /src && ls -d .git docker/secrets test/unit/test_kms 2>/dev/null; test -f Makefile && test -f kms/local.c && echo context-ok' 2>&1)
[ "$(tail -1 <<<"$out")" = context-ok ] && [ "$(wc -l <<<"$out")" = 1 ]
ks_check_out $? "$out" "the build context holds the sources but no .git (.dockerignore)"

# --- the entrypoint's refusals --------------------------------------------------
# run_refused NAME EXPECTED-MESSAGE DOCKER-RUN-ARGS...: the container must
# exit non-zero before starting a server, saying why
run_refused() {
    local name=$1 msg=$2 o rc
    shift 2
    o=$(timeout 60 "${KC_DOCKER:-/usr/bin/docker}" run --rm --network none "$@" "$IMAGE" 2>&1)
    rc=$?
    [ $rc -ne 0 ] && [[ $o == *"$msg"* ]] && [[ $o != *"database system is ready"* ]]
    ks_check_out $? "exit $rc: $o" "$name"
}
run_refused "refused: no master key (message says how to mount one)" "no master key: mount one as the Docker secret keysmith_master_key"
run_refused "refused: POSTGRES_PASSWORD in the environment" "POSTGRES_PASSWORD is not read" \
    -e POSTGRES_PASSWORD=hunter2 -e KEYSMITH_GENERATE_MASTER_KEY=1
install -m 0644 -o 999 -g 999 "$KEYSMITH_SECRETS/keysmith_master_key" "$W/loose.key"
run_refused "refused: a master key readable by others" "has mode 644; group and others must have no access" \
    -v "$W/loose.key:/run/secrets/keysmith_master_key:ro"

# KEYSMITH_GENERATE_MASTER_KEY=1: a server starts, its key is in the keys
# volume and nowhere in the data volume
gen=ks-gen-$$
RUNS+=("$gen")
kc_docker run -d --name "$gen" --network none -e KEYSMITH_GENERATE_MASTER_KEY=1 \
    -v "$gen-data:/var/lib/postgresql/data" -v "$gen-keys:/var/lib/keysmith/keys" "$IMAGE" >/dev/null 2>&1
for _ in $(seq 1 120); do
    kc_docker exec "$gen" pg_isready -q -h /run/postgresql >/dev/null 2>&1 && break
    sleep 0.5
done
out=$(kc_docker exec "$gen" sh -c '
    hex=$(cut -d: -f2 /var/lib/keysmith/keys/keysmith_master.key)
    stat -c "%a %U" /var/lib/keysmith/keys/keysmith_master.key
    grep -rl "$hex" "$PGDATA" 2>/dev/null | head -1
    psql -X -q -t -A -d postgres -c "CREATE EXTENSION keysmith; SELECT keysmith.create_key(\$\$g\$\$); SELECT keysmith.decrypt_value(keysmith.encrypt_value(\$\$g\$\$, \$\$x\$\$), NULL)"' 2>&1)
[ "$(head -1 <<<"$out")" = "600 postgres" ] && [ "$(tail -1 <<<"$out")" = x ] && ! grep -q '^/' <<<"$out"
ks_check_out $? "$out" "KEYSMITH_GENERATE_MASTER_KEY=1: a 0600 key in its own volume, not in the data volume, and it encrypts"
kc_docker rm -f -v "$gen" >/dev/null 2>&1
kc_docker volume rm -f "$gen-data" "$gen-keys" >/dev/null 2>&1

# --- compose: primary and replica -------------------------------------------------
# wait_healthy: until both containers report healthy (their HEALTHCHECK),
# at most 120 s, and not at all once one has stopped
wait_healthy() {
    local ids s
    ids=$(compose ps -q primary; compose ps -q replica)
    [ "$(wc -w <<<"$ids")" = 2 ] || return 1
    for _ in $(seq 1 240); do
        h=$(kc_docker inspect -f '{{.State.Status}}/{{.State.Health.Status}}' $ids 2>&1 | tr '\n' ' ')
        [ "$h" = "running/healthy running/healthy " ] && return 0
        [[ $h == *exited* || $h == *dead* ]] && return 1
        sleep 0.5
    done
    return 1
}
out=$(compose up -d 2>&1)
h=
wait_healthy
ks_check_out $? "$out $h $(compose logs --tail 20 2>&1)" "compose up: primary and replica healthy (HEALTHCHECK)"

PGPASS=$W/pgpass
(umask 077; printf '127.0.0.1:*:*:postgres:%s\n' "$(cat "$KEYSMITH_SECRETS/postgres_password")" >"$PGPASS")
qp() { PGPASSFILE=$PGPASS psql -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$KEYSMITH_PRIMARY_PORT" -U postgres -d postgres "$@"; }
qr() { PGPASSFILE=$PGPASS psql -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$KEYSMITH_REPLICA_PORT" -U postgres -d postgres "$@"; }

# caught_up: wait (up to 20 s) until the replica has replayed all the
# primary has written so far
caught_up() {
    local lsn
    lsn=$(qp -c 'SELECT pg_current_wal_lsn()')
    for _ in $(seq 1 200); do
        [ "$(qr -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}

out=$(qp -c 'CREATE EXTENSION keysmith' -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'" 2>&1)
[ "$out" = "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ROOT/keysmith.control")" ]
ks_check_out $? "$out" "CREATE EXTENSION keysmith over TCP (scram, postgres's password from its secret file)"

out=$(qp 2>&1 <<'SQL'
SELECT keysmith.create_key('dk');
CREATE TABLE dt AS SELECT i AS id, keysmith.encrypt_value('dk', 'secret-' || i, i::text) AS c
  FROM generate_series(1, 50) i;
SELECT count(*) FROM dt WHERE keysmith.decrypt_value(c, id::text) = 'secret-' || id;
SQL
)
[ "$(tail -1 <<<"$out")" = 50 ]
ks_check_out $? "$out" "encrypt/decrypt round trip on the primary (50 values)"

caught_up
out=$(qr -c "SELECT count(*) FROM dt WHERE keysmith.decrypt_value(c, id::text) = 'secret-' || id" 2>&1)
[ "$out" = 50 ]
ks_check_out $? "$out" "decrypt on the replica (same master key secret)"
out=$(qr -v VERBOSITY=verbose -c "SELECT keysmith.encrypt_value('dk', 'x')" 2>&1)
ks_sqlstate 25006 "*" "$out"
ks_check_out $? "$out" "refused on the replica: encrypt_value (25006)"

# a leased role: issued on the primary, logging in over TCP on both servers
out=$(qp 2>&1 <<'SQL'
CREATE ROLE dk_readers NOLOGIN;
GRANT SELECT ON dt TO dk_readers;
SELECT keysmith.create_role_template('dkr', ARRAY['dk_readers'], '10 minutes', '1 hour');
SELECT username || ' ' || password FROM keysmith.issue_role('dkr');
SQL
)
read -r luser lpw <<<"$(tail -1 <<<"$out")"
LPASS=$W/lease-pgpass
(umask 077; printf '127.0.0.1:*:*:%s:%s\n' "$luser" "$lpw" >"$LPASS")
caught_up
lp=$(PGPASSFILE=$LPASS psql -X -q -t -A -h 127.0.0.1 -p "$KEYSMITH_PRIMARY_PORT" -U "$luser" -d postgres \
    -c 'SELECT current_user, count(*) FROM dt' 2>&1)
lr=$(PGPASSFILE=$LPASS psql -X -q -t -A -h 127.0.0.1 -p "$KEYSMITH_REPLICA_PORT" -U "$luser" -d postgres \
    -c 'SELECT current_user, count(*) FROM dt' 2>&1)
[ -n "$luser" ] && [ "$lp" = "$luser|50" ] && [ "$lr" = "$luser|50" ]
ks_check_out $? "issue: $out; primary: $lp; replica: $lr" "a leased role logs in over TCP on the primary and on the replica"

# the key is nowhere in the data volumes
hex=$(cut -d: -f2 "$KEYSMITH_SECRETS/keysmith_master_key")
out=$(for s in primary replica; do
    kc_docker exec "$(compose ps -q $s)" sh -c "grep -rl '$hex' \"\$PGDATA\" /var/lib/keysmith 2>/dev/null"
done)
[ -z "$out" ]
ks_check_out $? "$out" "the master key is in no data volume of either server"

# restart: data and key survive
out=$(compose stop 2>&1 && compose up -d 2>&1)
healthy=0
wait_healthy && healthy=1
p=$(qp -c "SELECT count(*) FROM dt WHERE keysmith.decrypt_value(c, id::text) = 'secret-' || id" 2>&1)
r=$(qr -c "SELECT count(*) FROM dt WHERE keysmith.decrypt_value(c, id::text) = 'secret-' || id" 2>&1)
n=$(qp -c "SELECT keysmith.decrypt_value(keysmith.encrypt_value('dk', 'after'), NULL)" 2>&1)
[ $healthy = 1 ] && [ "$p" = 50 ] && [ "$r" = 50 ] && [ "$n" = after ]
ks_check_out $? "$out; health: $h; primary: $p; replica: $r; new: $n" "after a restart of both: every value decrypts on both, and encryption goes on"

# a wrong master key (issue 23): the primary restarted with another key of
# the same version stays unhealthy, and its health check names the key;
# the right key back, both are healthy again.  The secret is rewritten in
# place: its bind mount follows the file, not the name.
cp -p "$KEYSMITH_SECRETS/keysmith_master_key" "$W/right.key"
printf '1:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$KEYSMITH_SECRETS/keysmith_master_key"
compose restart primary >/dev/null 2>&1
pid=$(compose ps -q primary)
said=
for _ in $(seq 1 120); do
    said=$(kc_docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$pid" 2>&1)
    [[ $said == *"keys that do not open with this container's master key"* ]] && break
    sleep 0.5
done
hs=$(kc_docker inspect -f '{{.State.Health.Status}}' "$pid" 2>&1)
cat "$W/right.key" >"$KEYSMITH_SECRETS/keysmith_master_key"
[[ $said == *"database postgres: dk"* ]] && [ "$hs" != healthy ]
ks_check_out $? "health $hs: $said" "attack: restarted with another master key file, the primary is not healthy and its check names the key (dk)"
compose restart primary >/dev/null 2>&1
wait_healthy
p=$(qp -c "SELECT count(*) FROM dt WHERE keysmith.decrypt_value(c, id::text) = 'secret-' || id" 2>&1)
[ "$p" = 50 ]
ks_check_out $? "health: $h; primary: $p" "the right key back: healthy again, every value decrypts"

out=$(compose down -v 2>&1)
left=$(kc_docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT"; kc_docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ]
ks_check_out $? "$out $left" "compose down -v leaves no container and no volume"
COMPOSE_DONE=1
