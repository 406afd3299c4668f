# test/container/lib.sh
#
# Helpers for the suites that need a real Docker engine (docs/testing.md,
# "Containers").  Source it after test/lib.sh; it defines functions only.
#
#  kc_engine_up      install docker.io, docker-compose and debootstrap if
#                    missing; start dockerd (--bridge=none --iptables=false,
#                    so it adds no network and no firewall rule) if no
#                    engine answers.  Sets KC_STARTED_DOCKERD=1 if it did
#                    (not exported, and lost if called in a subshell: only
#                    the shell that started the engine stops it).
#  kc_engine_down    stop the dockerd that kc_engine_up started, if any.
#  kc_can_run IMAGE  does this engine run a container of IMAGE (host
#                    networking)?  Not in an unprivileged container, where
#                    runc cannot make its namespaces ("Error creating
#                    mount namespace before pivot"): it prints the error.
#  kc_base_image     print the name of a Debian 12 base image: debian:12
#                    if the registry answers, else one built here with
#                    debootstrap (minbase, the same apt sources as the
#                    official image), built once and kept in the engine.
#
# Every build and container of these suites uses host networking, and the
# servers they start listen on 127.0.0.1 only.

KC_PACKAGES="docker.io docker-compose debootstrap"
KC_LOCAL_BASE=keysmith-local/debian:12
KC_DOCKERD_DIR=/var/tmp/keysmith-dockerd

kc_engine_up() {
    local missing=() p
    for p in $KC_PACKAGES; do
        grep -q 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "keysmith: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
    fi
    # Debian's docker.io client; a docker found earlier on PATH may be a
    # newer client than this engine speaks
    KC_DOCKER=/usr/bin/docker
    export KC_DOCKER
    # KC_STARTED_DOCKERD is not exported: a suite run under another that
    # started the engine must not stop it
    KC_STARTED_DOCKERD=0
    if "$KC_DOCKER" info >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$KC_DOCKERD_DIR"
    # in a subshell, so that it is no job of this shell: a later plain
    # `wait` here must not wait for the engine
    (dockerd --bridge=none --iptables=false --ip6tables=false \
        --pidfile "$KC_DOCKERD_DIR/dockerd.pid" >"$KC_DOCKERD_DIR/dockerd.log" 2>&1 &)
    KC_STARTED_DOCKERD=1
    for _ in $(seq 1 120); do
        "$KC_DOCKER" info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "dockerd did not answer in 60 s:"
    tail -20 "$KC_DOCKERD_DIR/dockerd.log"
    return 1
}

kc_engine_down() {
    local pid
    [ "${KC_STARTED_DOCKERD:-0}" = 1 ] || return 0
    pid=$(cat "$KC_DOCKERD_DIR/dockerd.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 200); do
        ks_pid_alive "$pid" || break
        sleep 0.1
    done
    # its containerd goes with it; nothing else of it keeps running
    KC_STARTED_DOCKERD=0
}

kc_docker() { "${KC_DOCKER:-/usr/bin/docker}" "$@"; }

kc_can_run() {
    kc_docker run --rm --network host "$1" true
}

# kc_base_image: see the top of this file.  A lock keeps two suites from
# building the local base at once.
kc_base_image() {
    local root
    if [ -n "${KEYSMITH_BASE_IMAGE:-}" ]; then
        echo "$KEYSMITH_BASE_IMAGE"
        return 0
    fi
    exec 9>/var/lock/keysmith-base-image.lock
    flock 9
    if kc_docker image inspect debian:12 >/dev/null 2>&1 ||
        timeout 60 "${KC_DOCKER:-/usr/bin/docker}" pull -q debian:12 >/dev/null 2>&1; then
        flock -u 9
        echo debian:12
        return 0
    fi
    if ! kc_docker image inspect "$KC_LOCAL_BASE" >/dev/null 2>&1; then
        root=$(mktemp -d /var/tmp/keysmith-debootstrap.XXXXXX)
        if ! debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1; then
            echo "debootstrap failed:" >&2
            tail -20 "$root.log" >&2
            rm -rf "$root" "$root.log"
            flock -u 9
            return 1
        fi
        # the official image's apt sources, and its habit of keeping no
        # package lists
        rm -f "$root/etc/apt/sources.list"
        cat >"$root/etc/apt/sources.list.d/debian.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
        if ! tar -C "$root" -c . | kc_docker import - "$KC_LOCAL_BASE" >/dev/null; then
            rm -rf "$root" "$root.log"
            flock -u 9
            return 1
        fi
        rm -rf "$root" "$root.log"
    fi
    flock -u 9
    echo "$KC_LOCAL_BASE"
}

# kc_source_tar FILE: the project's sources as a tar with a keysmith/
# prefix: the files git tracks, as they are in the working tree (or, with
# no git, the tree without build products), never .git or build output.
kc_source_tar() {
    local out=$1
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -z | tar -C "$ROOT" --null -T - --transform 's,^,keysmith/,' -cf "$out"
    else
        tar -C "$ROOT" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
            --transform 's,^\.,keysmith,' -cf "$out" .
    fi
}
