#!/usr/bin/env bash
# Install, idempotently, everything pycni's tests and demo need on a Debian 12 machine:
# Docker 26.1 engine + docker-compose from Debian 13 (pinned so nothing else moves to trixie),
# the CNI reference plugins, iptables, busybox-static, etcd (overlay networks), dnsmasq (a DHCP
# server for the dhcp IPAM's test), Debian's dnsname CNI plugin; then .venv with pycni editable + test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null || need_apt+=(iptables)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && dpkg -s busybox-static >/dev/null 2>&1 \
    || need_apt+=(busybox-static)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v modprobe >/dev/null || need_apt+=(kmod)
# the overlay (issue 12) keeps its leases in etcd; the tests run a real one on loopback
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
# a DHCP server of the tests' own, for the dhcp IPAM's lease test (issue 17)
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
# a plugin from elsewhere, installed as users install it: Debian's dnsname (issue 19)
[ -x /usr/lib/cni/dnsname ] || need_apt+=(golang-github-containernetworking-plugin-dnsname)

if [ ${#need_apt[@]} -gt 0 ]; then
    # The Debian 13 source uses the same mirror URI as the first stanza of the system's sources.
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    if [ ! -f /etc/apt/sources.list.d/pycni-trixie.sources ]; then
        cat >/etc/apt/sources.list.d/pycni-trixie.sources <<SRC
Types: deb
URIs: ${uri}
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    cat >/etc/apt/preferences.d/pycni-trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: docker.io docker-cli docker-compose docker-buildx
Pin: release n=trixie
Pin-Priority: 990
PIN
    echo "deps: installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.pycni-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
