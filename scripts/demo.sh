#!/usr/bin/env bash
# The pycni demo: a zero-config pycni network and two containers that reach each other by name.
# Starts `pycni serve` in the background unless one is already serving, and cleans up after.
set -euo pipefail
cd "$(dirname "$0")/.."
SOCK=/run/docker/plugins/pycni.sock
LOG=/var/log/pycni-demo.log
NET=pycni-demo
IMAGE=pycni-test:busybox
started=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

cleanup() {
    docker rm -f pycni-demo-a pycni-demo-b >/dev/null 2>&1 || true
    docker network rm "$NET" >/dev/null 2>&1 || true
    if [ -n "$started" ]; then kill -TERM "$started" 2>/dev/null || true; wait "$started" 2>/dev/null || true; fi
}
trap cleanup EXIT

step "1. the pycni plugin on $SOCK"
if [ -S "$SOCK" ] && timeout 2 python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('$SOCK')" 2>/dev/null; then
    echo "already serving"
else
    .venv/bin/pycni serve --log-level info >>"$LOG" 2>&1 &
    started=$!
    for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
    echo "started pycni serve (pid $started, log $LOG)"
fi

step "2. a pycni network with no CNI config at all: bridge + static IPAM + portmap + firewall"
show docker network create -d pycni --subnet 10.200.0.0/24 "$NET"
show .venv/bin/pycni ls

step "3. two containers on it"
show docker run -d --name pycni-demo-a --network "$NET" "$IMAGE" sleep 300
show docker run -d --name pycni-demo-b --network "$NET" "$IMAGE" sleep 300
show docker inspect -f '{{.Name}}: {{range .NetworkSettings.Networks}}{{.IPAddress}}/{{.IPPrefixLen}} via {{.Gateway}} mac {{.MacAddress}}{{end}}' pycni-demo-a pycni-demo-b

step "4. they find each other through Docker's DNS and talk over the CNI bridge"
show docker exec pycni-demo-a ping -c 2 -W 2 pycni-demo-b
show docker exec pycni-demo-b ping -c 2 -W 2 pycni-demo-a

step "5. what pycni made for them"
show .venv/bin/pycni ls
show ip netns list

step "6. cleaning up: docker rm + docker network rm undo every CNI attachment"
show docker rm -f pycni-demo-a pycni-demo-b
show docker network rm "$NET"
show .venv/bin/pycni ls
echo
echo "demo done"
