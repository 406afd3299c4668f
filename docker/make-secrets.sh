#!/bin/sh
# docker/make-secrets.sh [DIR]: create the secret files docker/compose.yaml
# mounts (default DIR: docker/secrets next to this script): a fresh local
# master key and two random passwords, each mode 0400 and owned by uid
# POSTGRES_UID (default 999, the image's postgres).  Existing files are kept:
# a master key that encrypted data must never be replaced by a new one.
# Run as root (or with sudo) so the files can be given to that uid.
set -eu
DIR=${1:-$(dirname "$0")/secrets}
UID_PG=${POSTGRES_UID:-999}
[ "$(id -u)" = 0 ] || { echo "make-secrets.sh: run as root (the files go to uid $UID_PG)" >&2; exit 1; }
umask 077
mkdir -p "$DIR"
new() {
    [ -e "$DIR/$1" ] && { echo "kept $DIR/$1"; return 0; }
    printf '%s\n' "$2" >"$DIR/$1"
    chown "$UID_PG:$UID_PG" "$DIR/$1"
    chmod 0400 "$DIR/$1"
    echo "made $DIR/$1"
}
new keysmith_master_key "1:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
new postgres_password "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
new replication_password "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
