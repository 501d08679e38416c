#!/usr/bin/env bash
# pycni as a managed (v2) Docker plugin, built offline.
#
#   scripts/plugin.sh build     base image (once) → docker build → rootfs + config.json →
#                               docker plugin create + enable (replaces a pycni plugin not in use)
#   scripts/plugin.sh remove    docker plugin disable + rm (the base image stays cached)
#   scripts/plugin.sh test [PYTEST_ARGS]
#                               build, the e2e tier against the plugin (PYCNI_E2E_PLUGIN=1), then
#                               remove it whatever happened; run it holding the e2e lock
#                               (make test-plugin does)
#
# No image registry is needed: the base is a Debian bookworm minbase made with mmdebstrap from the
# machine's apt mirror and `docker import`ed as $PYCNI_PLUGIN_BASE, once; pycni and its Python
# dependencies go in as wheels built on the host. The caller serialises access to dockerd (the
# Makefile's test-plugin holds the machine-wide e2e lock).
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${PYCNI_PLUGIN_NAME:-pycni}                 # docker plugin name; Docker adds the tag :latest
BASE=${PYCNI_PLUGIN_BASE:-pycni-base:bookworm}
BASE_VERSION=2   # bump when the base's recipe changes: an older cached base is made again
ROOTFS_IMAGE=pycni-plugin-rootfs:build
WORK=build/plugin
WHEELS=build/plugin-wheels
# What the base holds; the Dockerfile installs the same list when it starts from debian:bookworm-slim.
PACKAGES=python3,python3-venv,iproute2,iptables,kmod,mount

say() { echo "plugin: $*"; }
die() { echo "plugin: $*" >&2; exit 1; }

have_plugin() { docker plugin inspect "$NAME" >/dev/null 2>&1; }

build_base() {
    local have
    have=$(docker image inspect -f '{{index .Config.Labels "pycni.base.version"}}' "$BASE" 2>/dev/null || true)
    if [ "$have" = "$BASE_VERSION" ]; then
        say "base $BASE cached"
        return
    fi
    if ! command -v mmdebstrap >/dev/null; then
        say "installing mmdebstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap
    fi
    local old uri
    old=$(docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null || true)
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    say "making $BASE: bookworm minbase + ${PACKAGES//,/ } from $uri"
    # Docs, man pages, locales and apt's lists never enter the image. /usr is merged by the hook
    # rather than by the usrmerge package, which would bring perl (50 MB) along.
    mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm - "$uri" | docker import -c "LABEL pycni.base.version=$BASE_VERSION" - "$BASE" >/dev/null
    if [ -n "$old" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi   # the older recipe's
}

build_wheels() {
    # pycni's own wheel is rebuilt every time; its dependencies' wheels are reused.
    mkdir -p "$WHEELS"
    rm -f "$WHEELS"/pycni-*.whl
    .venv/bin/pip wheel --quiet --disable-pip-version-check --find-links "$WHEELS" -w "$WHEELS" . \
        2> >(grep -v -e 'is ignored: it is neither a file nor a directory' >&2)
}

# Every bind-mount source in plugin.json must exist before `docker plugin enable`, and the
# namespaces the plugin makes reach the host only through a shared /run/netns mount.
prepare_host() {
    mkdir -p /opt/cni/bin /usr/lib/cni /etc/cni/net.d /var/lib/cni /var/lib/pycni /run/netns
    touch /run/xtables.lock
    [ -S /run/docker.sock ] || die "/run/docker.sock is missing: the plugin asks Docker through it"
    if ! mountpoint -q /run/netns; then
        mount --bind /run/netns /run/netns
    fi
    mount --make-shared /run/netns
}

build() {
    local t0=$SECONDS
    build_base
    build_wheels
    say "docker build (FROM $BASE)"
    docker build --quiet -t "$ROOTFS_IMAGE" --build-arg BASE="$BASE" \
        --build-arg PIP_INSTALL="--no-index --find-links /src/$WHEELS pycni" . >/dev/null
    rm -rf "$WORK"
    mkdir -p "$WORK/rootfs"
    local cid
    cid=$(docker create "$ROOTFS_IMAGE")
    docker export "$cid" | tar -x -C "$WORK/rootfs"
    docker rm "$cid" >/dev/null
    docker rmi "$ROOTFS_IMAGE" >/dev/null
    cp plugin.json "$WORK/config.json"
    say "rootfs $(du -sm "$WORK/rootfs" | cut -f1) MB"

    if have_plugin; then
        say "replacing the installed $NAME plugin"
        remove
    fi
    docker plugin create "$NAME" "$WORK" >/dev/null
    rm -rf "$WORK"
    prepare_host
    docker plugin enable --timeout 30 "$NAME" >/dev/null
    local id
    id=$(docker plugin inspect -f '{{.Id}}' "$NAME")
    [ -S "/run/docker/plugins/$id/pycni.sock" ] || die "enabled, but /run/docker/plugins/$id/pycni.sock is missing"
    say "$NAME:latest enabled ($((SECONDS - t0)) s); socket /run/docker/plugins/$id/pycni.sock"
}

remove() {
    have_plugin || return 0
    if [ "$(docker plugin inspect -f '{{.Enabled}}' "$NAME")" = true ]; then
        docker plugin disable "$NAME" >/dev/null \
            || die "cannot disable $NAME: remove the networks that use it first (docker network ls -f driver=$NAME:latest)"
    fi
    docker plugin rm "$NAME" >/dev/null
    say "$NAME removed"
}

# After the tests: networks of the plugin a failed test left go first (the plugin answers their
# DeleteNetwork), then the plugin; the host is as before but for the cached base image.
remove_after_tests() {
    if have_plugin; then
        local net
        for net in $(docker network ls -q -f "driver=$NAME:latest"); do
            say "removing network $net the tests left"
            docker ps -aq -f "network=$net" | xargs -r docker rm -f >/dev/null || true
            docker network rm "$net" >/dev/null || true
        done
        remove
    fi
    # Mount sources this run had to make go again (if still empty): the host is as it was.
    local dir
    for dir in "${made_dirs[@]}"; do rmdir "$dir" 2>/dev/null || true; done
}

run_tests() {
    [ "${PYCNI_E2E_LOCK_HELD:-}" = 1 ] || die "run it holding /run/lock/pycni-e2e.lock with PYCNI_E2E_LOCK_HELD=1 (make test-plugin)"
    # The engine may be stopping or starting (swapped by another run) as we get the lock: once
    # more if it was on its way down.
    bash scripts/engine.sh || { sleep 5; bash scripts/engine.sh; }
    # test_plugin.py's upgrade pulls from a registry of its own on loopback: Debian's
    # docker-registry, unpacked here rather than installed (no service, no user).
    local registry=build/docker-registry/usr/bin/docker-registry
    if [ ! -x "$registry" ]; then
        say "unpacking docker-registry into build/docker-registry"
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get download -qq docker-registry 2>/dev/null \
            || { apt-get update -qq && apt-get download -qq docker-registry; })
        mkdir -p build/docker-registry   # a fresh clone has no build/
        dpkg -x "$tmp"/docker-registry_*.deb build/docker-registry
        rm -rf "$tmp"
    fi
    export PYCNI_E2E_REGISTRY=$PWD/$registry
    made_dirs=()
    local dir
    for dir in /etc/cni/net.d /etc/cni /opt/cni/bin /opt/cni /var/lib/pycni; do
        [ -e "$dir" ] || made_dirs+=("$dir")
    done
    trap remove_after_tests EXIT
    build
    local rc=0
    # test_plugin.py first: Docker 26.1 keeps no count of the networks it restores when it
    # restarts, so after the engine-restart tests `docker plugin disable` is no longer refused.
    local files=(tests/e2e/test_plugin.py)
    local f
    for f in tests/e2e/test_*.py; do [ "$f" = "${files[0]}" ] || files+=("$f"); done
    PYCNI_E2E_PLUGIN=1 .venv/bin/python -m pytest -m e2e "${files[@]}" "$@" || rc=$?
    # pytest's 5 means nothing ran: never a pass.
    [ "$rc" -eq 5 ] && { echo "plugin: pytest collected no tests" >&2; rc=1; }
    return "$rc"
}

case ${1:-build} in
build) build ;;
remove) remove ;;
test) shift; run_tests "$@" ;;
*) die "usage: $0 [build|remove|test [PYTEST_ARGS...]]" ;;
esac
