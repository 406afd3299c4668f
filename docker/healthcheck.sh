#!/bin/sh
# docker/healthcheck.sh: the image's HEALTHCHECK, as keysmith-healthcheck.
#
# Healthy when the server answers and every live DEK version of every
# database with keysmith opens with this container's master key
# (keysmith.verify_keys()).  A master key file that is not the one the
# data was made with (a copy from another environment, a stale secret, an
# old backup) keeps the container unhealthy, and the check's output names
# the keys that do not open; keysmith itself refuses every write under
# such a key (KS019).  Once the keys pass, they are not checked again
# until the server restarts (the key file is read at start from the
# secret mount): a file in /run/postgresql records the start time that
# passed.
#
# It runs as postgres, a superuser, so it calls only functions that are
# members of the installed extension (pg_depend), never a function found
# by name alone: a database owner could create a schema "keysmith" with
# a verify_keys of its own.
set -eu

pg_isready -q -h /run/postgresql -p "$PGPORT" -U postgres || exit 1
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h /run/postgresql -p "$PGPORT" -U postgres "$@"; }

start=$(q -d postgres -c "SELECT pg_catalog.pg_postmaster_start_time()")
passed=/run/postgresql/keysmith-keys-verified
[ -f "$passed" ] && [ "$(cat "$passed")" = "$start" ] && exit 0

bad=
dbs=$(q -d postgres -c "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate")
newline='
'
IFS=$newline
for db in $dbs; do
    # psql would take a name with '=' or a URI prefix for connection options
    case $db in *=* | postgres://* | postgresql://*) continue ;; esac
    member=$(q -d "$db" -c "SELECT pg_catalog.count(*) FROM pg_catalog.pg_depend d
                              JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
                             WHERE e.extname OPERATOR(pg_catalog.=) 'keysmith'
                               AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                               AND d.objid OPERATOR(pg_catalog.=)
                                   pg_catalog.to_regprocedure('keysmith.verify_keys(text)')
                               AND d.deptype OPERATOR(pg_catalog.=) 'e'") || exit 1
    [ "$member" = 1 ] || continue
    unreadable=$(q -d "$db" -c "SELECT pg_catalog.string_agg(DISTINCT key_name, ', ')
                                  FROM keysmith.verify_keys(NULL::pg_catalog.text) WHERE NOT readable") || exit 1
    [ -z "$unreadable" ] || bad="$bad database $db: $unreadable;"
done
unset IFS
if [ -n "$bad" ]; then
    echo "keys that do not open with this container's master key (is it the one the data was made with?):$bad"
    exit 1
fi
printf '%s' "$start" >"$passed"
exit 0
