#!/usr/bin/env bash
# Start dockerd unless it already answers, then make sure the test image exists.
# Idempotent and fast when the engine is up. No systemd here: dockerd runs under setsid.
set -euo pipefail
LOG=${PYCNI_DOCKERD_LOG:-/var/log/pycni-dockerd.log}
IMAGE=${PYCNI_TEST_IMAGE:-pycni-test:busybox}
IMAGE_VERSION=2   # bump when the image's contents change; an older one is re-imported

answers() { timeout 5 docker info >/dev/null 2>&1; }

modprobe br_netfilter 2>/dev/null || true   # built in on some kernels; Docker wants it

if ! answers; then
    # A dockerd killed hard leaves its pid file (and maybe its socket): dockerd refuses to
    # start while the pid file names a live process, so only remove it when that process is gone.
    if [ -f /var/run/docker.pid ]; then
        pid=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            rm -f /var/run/docker.pid
        fi
    fi
    if ! pgrep -x dockerd >/dev/null; then
        rm -f /var/run/docker.sock
        echo "engine: starting dockerd (log: $LOG)"
        setsid dockerd >>"$LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 60); do
        answers && break
        sleep 1
    done
    if ! answers; then
        echo "engine: dockerd did not answer within 60s; last log lines:" >&2
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
