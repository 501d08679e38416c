#!/usr/bin/env bash
# make test-compat / test-engine28: the e2e tier against another engine than the system's 26.1:
# Debian 12's own Docker 20.10, or Debian sid's Docker 28.5 (PYCNI_COMPAT_ENGINE=28.5).
#
#   scripts/compat.sh [PYTEST_ARGS...]      pytest -m "e2e and not once" PYTEST_ARGS there
#   scripts/compat.sh --run CMD [ARGS...]   any command instead, with that engine serving
#
# 20.10: dockerd, containerd, runc and tini come from the bookworm packages, fetched with
# `apt-get download` and unpacked with `dpkg -x` into a directory of their own (never installed
# over the 26.1 engine). 28.5: dockerd, containerd and tini from sid (scripts/sid.sh), with the
# system's runc (sid's needs a newer glibc) and the machine's docker client.
#
# The swap holds the machine-wide e2e lock from before 26.1 stops until after it answers again:
# 26.1 is stopped; the other engine runs with data and exec roots of its own, empty every run
# (26.1's images, containers and runtime state are not touched) and gets the test image as
# engine.sh imports it; the tests run; it stops, and 26.1 is started again by scripts/engine.sh
# — from an EXIT trap, so a failure or Ctrl-C puts it back too.
#
# The tests restart the engine themselves through engine.sh (`dockerd` from PATH): a `dockerd`
# wrapper first on PATH makes those restarts start the same engine with its own roots as well.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${PYCNI_COMPAT_ENGINE:-20.10}
case "$ENGINE" in
    20.10)
        COMPAT_DIR=${PYCNI_COMPAT_DIR:-/opt/pycni-compat/20.10}   # the unpacked packages
        DATA_ROOT=/var/lib/pycni-compat/docker
        EXEC_ROOT=/run/pycni-compat/docker
        RELEASE=bookworm
        PACKAGES=(docker.io containerd runc tini) ;;
    28.5)
        COMPAT_DIR=${PYCNI_COMPAT_DIR:-/opt/pycni-compat/28.5}
        DATA_ROOT=/var/lib/pycni-compat28/docker
        EXEC_ROOT=/run/pycni-compat28/docker
        RELEASE=sid
        PACKAGES=(docker.io containerd tini) ;;
    *) echo "compat: PYCNI_COMPAT_ENGINE is 20.10 or 28.5, not $ENGINE" >&2; exit 2 ;;
esac
LOCK=/run/lock/pycni-e2e.lock
LOCK_WAIT=${PYCNI_COMPAT_LOCK_WAIT:-3600}
PIDFILE=/var/run/docker.pid
SYSTEM_PATH=$PATH
SYSTEM_LOG=${PYCNI_DOCKERD_LOG-}

say() { printf 'compat: %s\n' "$*"; }
die() { printf 'compat: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it stops and starts dockerd)"

# --- the bookworm engine, unpacked in a directory of its own -----------------------------------

fetch() {
    if [ "$RELEASE" = sid ]; then
        bash scripts/sid.sh "$COMPAT_DIR" "${PACKAGES[@]}"
        return
    fi
    local stamp=$COMPAT_DIR/.pycni-packages
    [ -f "$stamp" ] && [ -x "$COMPAT_DIR/usr/sbin/dockerd" ] && return 0
    local tmp
    tmp=$(mktemp -d)
    chown _apt "$tmp" 2>/dev/null || true   # apt downloads as _apt where it can
    local specs=()
    for pkg in "${PACKAGES[@]}"; do specs+=("$pkg/$RELEASE"); done
    say "downloading ${specs[*]}"
    if ! (cd "$tmp" && apt-get download -q "${specs[@]}" >/dev/null); then
        apt-get update -qq   # a machine whose package lists were never fetched
        (cd "$tmp" && apt-get download -q "${specs[@]}" >/dev/null) \
            || die "apt-get download ${specs[*]} failed: is $RELEASE among the apt sources?"
    fi
    rm -rf "$COMPAT_DIR.new"
    mkdir -p "$COMPAT_DIR.new"
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$COMPAT_DIR.new"; done
    (cd "$tmp" && ls -1 ./*.deb | sed 's|^\./||') >"$COMPAT_DIR.new/.pycni-packages"
    rm -rf "$tmp" "$COMPAT_DIR"
    mv "$COMPAT_DIR.new" "$COMPAT_DIR"
}

fetch
# Shared libraries the 20.10 binaries link that the 26.1 packages don't pull in.
missing=$(ldd "$COMPAT_DIR/usr/sbin/dockerd" $( [ -x "$COMPAT_DIR/usr/sbin/runc" ] && echo "$COMPAT_DIR/usr/sbin/runc") | awk '/not found/ {print $1}')
if [ -n "$missing" ]; then
    say "installing libraries for ${missing//$'\n'/ }"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libdevmapper1.02.1 libseccomp2 >/dev/null
fi

# The wrapper engine.sh starts as `dockerd`: it execs 20.10's with the compat roots, so the
# process is still called dockerd (engine.sh and the tests look for that name).
mkdir -p "$COMPAT_DIR/bin"
cat >"$COMPAT_DIR/bin/dockerd" <<WRAP
#!/bin/sh
exec "$COMPAT_DIR/usr/sbin/dockerd" --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" "\$@"
WRAP
chmod 0755 "$COMPAT_DIR/bin/dockerd"
COMPAT_PATH=$COMPAT_DIR/bin:$COMPAT_DIR/usr/sbin:$COMPAT_DIR/usr/bin:$SYSTEM_PATH

# --- the swap, under the lock ------------------------------------------------------------------

say "waiting for $LOCK (up to ${LOCK_WAIT}s)"
exec {lockfd}>>"$LOCK"
flock -w "$LOCK_WAIT" "$lockfd" || die "another e2e session held $LOCK for ${LOCK_WAIT}s"
export PYCNI_E2E_LOCK_HELD=1

# The running engine's pid, if the pid file names a live dockerd.
engine_pid() {
    local pid name=
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    [ -n "$pid" ] && read -r name 2>/dev/null <"/proc/$pid/comm"
    [ "$name" = dockerd ] && echo "$pid"
    return 0
}

stop_engine() {
    local pid
    pid=$(engine_pid)
    [ -n "$pid" ] || return 0
    say "stopping dockerd (pid $pid, $(readlink "/proc/$pid/exe" 2>/dev/null || echo '?'))"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 90))
    while [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if [ -e "/proc/$pid" ]; then
        echo "compat: dockerd $pid did not stop within 90s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
}

# 20.10 starts from empty roots every run: nothing an earlier run left (a network, the default
# bridge's stored subnet) carries over. Mounts there go first: 20.10 bind-mounts its data root
# onto itself (and leaves that behind), and a killed one leaves its namespaces and layers.
unmount_roots() {
    local root mnt
    for root in "$EXEC_ROOT" "$DATA_ROOT"; do
        awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r |
            while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    done
}
fresh_roots() {
    unmount_roots
    rm -rf --one-file-system "$EXEC_ROOT" "$DATA_ROOT"
    mkdir -p "$EXEC_ROOT" "$DATA_ROOT"
}

swapped=
restore() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$swapped" ]; then
        say "putting Docker 26.1 back (after $ENGINE)"
        stop_engine
        unmount_roots   # 20.10 leaves its data root bind-mounted onto itself
        if [ -n "$SYSTEM_LOG" ]; then export PYCNI_DOCKERD_LOG=$SYSTEM_LOG; else unset PYCNI_DOCKERD_LOG; fi
        # engine.sh waits rather than start a second engine while any process called dockerd
        # runs (another rig's daemon on a socket of its own, say): try again a few times.
        local attempt
        for attempt in 1 2 3 4; do
            if PATH=$SYSTEM_PATH bash scripts/engine.sh; then
                break
            elif [ "$attempt" -eq 4 ]; then
                echo "compat: FAILED to restart the engine with scripts/engine.sh" >&2
                rc=1
            else
                echo "compat: engine.sh failed (attempt $attempt); trying again" >&2
                sleep 5
            fi
        done
    fi
    exit "$rc"
}
trap restore EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

swapped=yes
stop_engine
fresh_roots
export PATH=$COMPAT_PATH PYCNI_DOCKERD_LOG=/var/log/pycni-dockerd-compat$ENGINE.log
bash scripts/engine.sh
server=$(docker version --format '{{.Server.Version}}')
case "$server" in
    "$ENGINE".*) say "Docker $server serving (client $(docker version --format '{{.Client.Version}}'))" ;;
    *) die "expected dockerd $ENGINE after the swap, got $server" ;;
esac

set +e
if [ "${1:-}" = --run ]; then
    shift
    "$@"
    rc=$?
else
    # the tests marked once wait minutes on what no engine changes: make test runs them
    .venv/bin/python -m pytest -m "e2e and not once" "$@"
    rc=$?
    if [ "$rc" -eq 5 ]; then echo "compat: pytest collected no tests" >&2; rc=1; fi
fi
set -e
exit "$rc"
