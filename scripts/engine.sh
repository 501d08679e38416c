#!/usr/bin/env bash
# Start dockerd unless it already answers, then make sure the test image exists.
# Idempotent and fast when the engine is up. No systemd here: dockerd runs under setsid.
set -euo pipefail
LOG=${PYCNI_DOCKERD_LOG:-/var/log/pycni-dockerd.log}
ARGS=${PYCNI_DOCKERD_ARGS:-}   # extra dockerd flags, e.g. --live-restore (tests use it)
IMAGE=${PYCNI_TEST_IMAGE:-pycni-test:busybox}
IMAGE_VERSION=2   # bump when the image's contents change; an older one is re-imported

PIDFILE=/var/run/docker.pid
WAIT=60   # seconds for dockerd to answer

answers() { timeout 5 docker info >/dev/null 2>&1; }

# Is this pid a live dockerd? (Not just "alive": after a crash or reboot the number may be reused.)
is_dockerd() {
    local name=
    [ -n "$1" ] && read -r name 2>/dev/null <"/proc/$1/comm"
    [ "$name" = dockerd ]
}

# The machine's engine: the dockerd its pid file names. Other dockerds (a second "host" in its own
# namespaces, with its own pid file) are not it and never make us wait.
dockerd_running() {
    is_dockerd "$(cat "$PIDFILE" 2>/dev/null || true)"
}

for tool in docker dockerd; do
    command -v "$tool" >/dev/null || { echo "engine: no $tool on PATH (run make deps)" >&2; exit 1; }
done

# Docker loads it itself when it can; on kernels with it built in (or no /lib/modules) this fails.
modprobe br_netfilter 2>/dev/null || true

if ! answers; then
    # A dockerd killed hard leaves its pid file and socket behind. dockerd refuses to start while
    # the pid file names a live process, so the file goes when that process is not a dockerd.
    if [ -f "$PIDFILE" ] && ! is_dockerd "$(cat "$PIDFILE" 2>/dev/null || true)"; then
        echo "engine: removing stale $PIDFILE"
        rm -f "$PIDFILE"
    fi
    started=
    if ! dockerd_running; then
        rm -f /var/run/docker.sock   # stale: nobody listens on it
        echo "engine: starting dockerd${ARGS:+ $ARGS} (log: $LOG)"
        echo "=== $(date -Is) engine.sh starts dockerd${ARGS:+ $ARGS}" >>"$LOG"
        read -r -a extra <<<"$ARGS"   # PYCNI_DOCKERD_ARGS, split on blanks
        (
            # dockerd (and the containerd it starts) outlive us: they must not inherit our open
            # files. A caller's lock file (flock(1) passes its fd on) would stay locked forever.
            for fd in /proc/$BASHPID/fd/*; do
                fd=${fd##*/}
                # (the listing's own fd is in the glob and already closed: ignore that error)
                if [ "$fd" -gt 2 ]; then exec {fd}>&- 2>/dev/null || true; fi
            done
            exec setsid dockerd "${extra[@]}" >>"$LOG" 2>&1 </dev/null
        ) &
        started=$!
    else
        echo "engine: a dockerd is running but not answering yet; waiting"
    fi
    deadline=$((SECONDS + WAIT))
    while [ "$SECONDS" -lt "$deadline" ] && ! answers; do
        sleep 1
        # Ours died (bad flags, a leftover lock...): no point waiting out the minute.
        # (It writes its pid file a moment after it starts: until then, the pid we started.)
        if [ -n "$started" ] && ! dockerd_running && ! is_dockerd "$started"; then break; fi
    done
    if ! answers; then
        echo "engine: dockerd is not answering (it exited, or ${WAIT}s passed); end of $LOG:" >&2
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
fi

have=$(docker image inspect -f '{{index .Config.Labels "pycni.image.version"}}' "$IMAGE" 2>/dev/null || true)
if [ "$have" != "$IMAGE_VERSION" ]; then
    # No registry is reachable: build a one-binary busybox root and import it.
    echo "engine: importing $IMAGE from busybox-static"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/www"
    chmod 1777 "$tmp/root/tmp"
    cp /bin/busybox "$tmp/root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$tmp/root/bin/$applet"
    done
    tar -C "$tmp/root" -c . | docker import -c 'ENV PATH=/bin' \
        -c "LABEL pycni.image.version=$IMAGE_VERSION" - "$IMAGE" >/dev/null
fi
echo "engine: docker $(docker version --format '{{.Server.Version}}') up, image $IMAGE present"
