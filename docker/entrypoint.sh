#!/bin/sh
# docker/entrypoint.sh: initialise the cluster once (keysmith preloaded, a
# fresh 0600 master key in the data directory), then run the server.
# POSTGRES_PASSWORD sets the postgres password for TCP logins (scram).
set -eu
BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" > "$pwfile"
    "$BIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" -A scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "shared_preload_libraries = 'keysmith'" >> "$PGDATA/postgresql.conf"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    (umask 077; printf '1:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$PGDATA/keysmith_master.key")
fi
exec "$BIN/postgres" -D "$PGDATA"
