# The managed Docker plugin's root filesystem (plugin.json is its config).
#
#   docker build -t pycni-plugin-rootfs .           # with a registry: the public Debian image
#   make plugin                                     # offline: a bookworm base made with mmdebstrap
#
# `make plugin` (scripts/plugin.sh) passes BASE (a local bookworm with the packages below already
# in it) and PIP_INSTALL (wheels built on the host), so no step here needs a network.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# python3 for pycni; iproute2 and iptables (legacy and nft) for the CNI plugins, which run inside
# the plugin; mount (util-linux) for the entry point's /proc/sys remount.
RUN set -eu; \
    missing=; \
    for pkg in python3 python3-venv iproute2 iptables kmod mount; do \
        dpkg-query -W -f '${Status}\n' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$missing $pkg"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi

COPY . /src
# Default: pycni from the build context, its dependencies from PyPI.
ARG PIP_INSTALL=/src
RUN set -eu; \
    python3 -m venv /opt/pycni; \
    /opt/pycni/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_INSTALL; \
    install -m 0755 /src/contrib/plugin/entrypoint.sh /usr/local/bin/pycni-plugin-entrypoint; \
    rm -rf /src /root/.cache; \
    /opt/pycni/bin/pip uninstall -y -q pip setuptools 2>/dev/null || true; \
    rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
        /var/cache/debconf/*-old /var/log/*.log; \
    mkdir -p /run/docker/plugins /run/netns /var/lib/pycni /var/lib/cni /etc/cni/net.d \
        /opt/cni/bin /usr/lib/cni /var/lib/pycni-propagated; \
    touch /run/xtables.lock /run/docker.sock

ENTRYPOINT ["/usr/local/bin/pycni-plugin-entrypoint"]
