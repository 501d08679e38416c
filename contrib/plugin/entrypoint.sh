#!/bin/sh
# The managed plugin's entry point: make the plugin's view of the host usable by CNI plugins,
# then exec `pycni serve` on the socket Docker gave the plugin.
#
# Docker waits ~9.5 s for the socket and then disables the plugin without a word, so nothing
# here may block: `pycni serve` answers first and reconciles beside serving.
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# stdout reaches dockerd's log as level=info, stderr as level=error
log() { echo "pycni-plugin: $*"; }
fail() { echo "pycni-plugin: $*" >&2; }

# Docker mounts /proc/sys read-only in a plugin; the bridge and portmap plugins write sysctls
# (ip_forward, route_localnet, a bridge port's settings). Remounting needs CAP_SYS_ADMIN.
if ! mount -o remount,rw /proc/sys 2>/dev/null; then
    mount -o remount,rw,bind /proc/sys || fail "cannot make /proc/sys writable: sysctl writes will fail"
fi

# With network.type host the plugin edits the host's netfilter, so its iptables must be the
# flavour the host's rules live in (Docker's, the host firewall's): rules written with the other
# flavour are never looked at together with them.
choose_iptables() {
    mode=${PYCNI_IPTABLES:-auto}
    if [ "$mode" = auto ]; then
        legacy=$( (iptables-legacy-save; ip6tables-legacy-save) 2>/dev/null | grep -c '^-A' || true)
        nft=$( (iptables-nft-save; ip6tables-nft-save) 2>/dev/null | grep -c '^-A' || true)
        if [ "${legacy:-0}" -gt "${nft:-0}" ]; then mode=legacy; else mode=nft; fi
        log "iptables: $mode (host rules: legacy $legacy, nft $nft)"
    fi
    case $mode in
    legacy | nft) ;;
    *) fail "PYCNI_IPTABLES must be auto, legacy or nft, not '$mode'"; exit 2 ;;
    esac
    for tool in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
        ln -sf "/usr/sbin/xtables-$mode-multi" "/usr/local/sbin/$tool"
    done
}
choose_iptables

exec /opt/pycni/bin/pycni serve \
    --socket /run/docker/plugins/pycni.sock \
    --log-level "${PYCNI_LOG_LEVEL:-info}"
