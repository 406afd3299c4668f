#!/bin/sh
# docker/entrypoint.sh: start PostgreSQL 15 with keysmith, as the postgres
# user.  Initialises the cluster on first start: a primary by initdb, a
# streaming replica (KEYSMITH_PRIMARY_HOST set) by pg_basebackup.  Network
# settings, pg_hba and the master key's path are decided at every start
# from the environment, so they are never baked into the data volume.
#
# Environment (docs/deployment.md, "Docker"):
#   KEYSMITH_MASTER_KEY_FILE   master key file (default: the Docker secret
#                              /run/secrets/keysmith_master_key); mode 0400
#                              or 0600, readable by the postgres uid
#   KEYSMITH_GENERATE_MASTER_KEY=1
#                              throwaway containers only: generate a key
#                              into /var/lib/keysmith/keys, a volume of its
#                              own, never the data volume
#   POSTGRES_PASSWORD_FILE     postgres's password for TCP logins (default
#                              /run/secrets/postgres_password; optional:
#                              without it postgres logs in by socket only)
#   KEYSMITH_REPLICATION_PASSWORD_FILE
#                              password of the "replicator" role (default
#                              /run/secrets/replication_password); needed
#                              by a replica, optional on a primary
#   KEYSMITH_PRIMARY_HOST, KEYSMITH_PRIMARY_PORT
#                              make this container a streaming replica
#   KEYSMITH_NETWORK           loopback (default): listen on 127.0.0.1 only,
#                              for host networking; container: also on the
#                              container's own addresses, with TCP logins
#                              accepted from its own subnets (samenet)
#   PGPORT                     port (default 5432)
# Arguments are passed on to postgres (e.g. -c log_min_messages=debug1).
set -eu

die() {
    echo "keysmith-entrypoint: $*" >&2
    exit 1
}

[ "$(id -u)" != 0 ] || die "refusing to run as root: the image runs as postgres"
[ -z "${POSTGRES_PASSWORD:-}" ] ||
    die "POSTGRES_PASSWORD is not read: an environment variable shows in 'docker inspect'; mount the password as a file (POSTGRES_PASSWORD_FILE, default /run/secrets/postgres_password)"

PGDATA=${PGDATA:?}
PGPORT=${PGPORT:-5432}
NETWORK=${KEYSMITH_NETWORK:-loopback}
SECRET_KEY=/run/secrets/keysmith_master_key
GENERATED_KEY=/var/lib/keysmith/keys/keysmith_master.key
PW_FILE=${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}
REPL_FILE=${KEYSMITH_REPLICATION_PASSWORD_FILE:-/run/secrets/replication_password}
PRIMARY_HOST=${KEYSMITH_PRIMARY_HOST:-}
PRIMARY_PORT=${KEYSMITH_PRIMARY_PORT:-5432}
PGPASS=/var/lib/postgresql/.pgpass-replication
HBA=/var/lib/postgresql/pg_hba.conf

# --- the master key: a mounted secret, or an explicit throwaway one --------
if [ "${KEYSMITH_GENERATE_MASTER_KEY:-0}" = 1 ]; then
    [ -z "${KEYSMITH_MASTER_KEY_FILE:-}" ] && [ ! -e "$SECRET_KEY" ] ||
        die "KEYSMITH_GENERATE_MASTER_KEY=1 and a master key file are both given; choose one"
    KEY=$GENERATED_KEY
    if [ ! -s "$KEY" ]; then
        [ -n "$PRIMARY_HOST" ] &&
            die "a replica cannot generate a master key: it must use the primary's (mount it as the keysmith_master_key secret)"
        (umask 077 && printf '1:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$KEY")
        echo "keysmith-entrypoint: generated a throwaway master key in $KEY (its own volume; back it up apart from the data)"
    fi
else
    KEY=${KEYSMITH_MASTER_KEY_FILE:-$SECRET_KEY}
    [ -e "$KEY" ] ||
        die "no master key: mount one as the Docker secret keysmith_master_key (or set KEYSMITH_MASTER_KEY_FILE), or set KEYSMITH_GENERATE_MASTER_KEY=1 for a throwaway container"
fi
case "$(readlink -f "$KEY")/" in
"$(readlink -f "$PGDATA")"/*)
    die "the master key file $KEY is inside the data directory: a backup of the data would carry its own key" ;;
esac
[ -r "$KEY" ] ||
    die "the master key file $KEY is not readable by uid $(id -u) (chown it to $(id -u), mode 0400)"
case "$(stat -L -c %a "$KEY")" in
400 | 600) ;;
*) die "the master key file $KEY has mode $(stat -L -c %a "$KEY"); group and others must have no access (chmod 0400)" ;;
esac

# --- network: where to listen and whom to let in --------------------------
case "$NETWORK" in
loopback)
    LISTEN=127.0.0.1 ;;
container)
    addrs=$(hostname -I 2>/dev/null | tr -s ' ' ',' | sed 's/,$//')
    [ -n "$addrs" ] || die "KEYSMITH_NETWORK=container: this container has no address"
    LISTEN="127.0.0.1,$addrs" ;;
*)
    die "KEYSMITH_NETWORK must be loopback or container, not \"$NETWORK\"" ;;
esac
{
    echo "# written by keysmith-entrypoint at every start (KEYSMITH_NETWORK=$NETWORK)"
    echo "local all all peer"
    echo "host all all 127.0.0.1/32 scram-sha-256"
    echo "host replication replicator 127.0.0.1/32 scram-sha-256"
    if [ "$NETWORK" = container ]; then
        echo "host all all samenet scram-sha-256"
        echo "host replication replicator samenet scram-sha-256"
    fi
} >"$HBA"

# the replication password, for pg_basebackup and the walreceiver, in a
# password file of the container's own (never in the data directory)
write_pgpass() {
    (umask 077 && printf '*:*:*:replicator:%s\n' "$(head -n1 "$REPL_FILE" | sed 's/[\\:]/\\&/g')" >"$PGPASS")
}

# --- first start ------------------------------------------------------------
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -z "$(ls -A "$PGDATA" 2>/dev/null)" ] ||
        die "$PGDATA is not empty but holds no cluster; refusing to overwrite it"
    if [ -n "$PRIMARY_HOST" ]; then
        [ -r "$REPL_FILE" ] || die "a replica needs the replication password ($REPL_FILE)"
        write_pgpass
        echo "keysmith-entrypoint: waiting for the primary at $PRIMARY_HOST:$PRIMARY_PORT"
        i=0
        until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
            i=$((i + 1))
            [ $i -lt 120 ] || die "the primary at $PRIMARY_HOST:$PRIMARY_PORT did not answer in 120 s"
            sleep 1
        done
        PGPASSFILE=$PGPASS pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -w \
            -D "$PGDATA" -X stream -c fast
        touch "$PGDATA/standby.signal"
        chmod 0700 "$PGDATA"
    else
        pwopt=
        [ -r "$PW_FILE" ] && pwopt="--pwfile=$PW_FILE"
        # shellcheck disable=SC2086
        initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            --encoding=UTF8 --locale=C.UTF-8 $pwopt >/dev/null
        cat >>"$PGDATA/postgresql.conf" <<'CONF'

# keysmith image (docker/entrypoint.sh).  listen_addresses, port, hba_file
# and keysmith.local_master_key_file are set on the command line at every
# start, from the container's environment.
shared_preload_libraries = 'keysmith'
CONF
        if [ -r "$REPL_FILE" ]; then
            # the password is read by the server from the secret file, so
            # it appears in no SQL text and no command line
            pg_ctl -D "$PGDATA" -w -t 60 -l /tmp/keysmith-init.log \
                -o "-c listen_addresses= -c hba_file=$HBA -c keysmith.local_master_key_file=$KEY" start >/dev/null
            psql -X -q -v ON_ERROR_STOP=1 -d postgres -v pwfile="$REPL_FILE" >/dev/null <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN;
SELECT pg_catalog.set_config('keysmith_init.pwfile', :'pwfile', false);
DO $$
BEGIN
    EXECUTE pg_catalog.format('ALTER ROLE replicator PASSWORD %L',
        pg_catalog.rtrim(pg_catalog.split_part(
            pg_catalog.pg_read_file(pg_catalog.current_setting('keysmith_init.pwfile')), E'\n', 1), E'\r'));
END
$$;
SQL
            pg_ctl -D "$PGDATA" -w -t 60 -m fast stop >/dev/null
        fi
    fi
fi

set -- -D "$PGDATA" -c port="$PGPORT" -c listen_addresses="$LISTEN" -c hba_file="$HBA" \
    -c keysmith.local_master_key_file="$KEY" "$@"
if [ -n "$PRIMARY_HOST" ]; then
    write_pgpass
    set -- "$@" -c primary_conninfo="host=$PRIMARY_HOST port=$PRIMARY_PORT user=replicator passfile=$PGPASS application_name=${HOSTNAME:-replica}"
fi
exec postgres "$@"
