"""What ``docker network create -d pycni -o cni.overlay=NAME …`` asks, and the chain it runs.

An overlay network is pycni's zero-config bridge network with two differences: its addresses
come from this host's lease (``host-local`` on the lease, gateway its first address, so the
network needs ``--ipam-driver null``: Docker's IPAM would hand every host the whole range), and
its bridge forwards to and from the overlay's VTEP without masquerading (the per-network rules
of :mod:`shim.firewall`, with ``peers``). The MTU is the overlay's: the underlay's minus VXLAN's
50 bytes, unless ``-o cni.mtu`` (or Docker's ``driver.mtu``) set it for the whole overlay.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from .. import chains
from ..cni.config import conflist_from_dict
from ..errors import InvalidRequest, Unsupported
from ..protocol import CreateNetworkRequest
from ..state import AddressVia, Ipam, Mode, NetworkRules
from .leases import Asked
from .manager import Joined

OPTIONS = chains.OVERLAY_OPTIONS
OPT_OVERLAY, OPT_SUBNET, OPT_PREFIX, OPT_VNI = OPTIONS


def _number(options: Mapping[str, str], key: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options[key])
    except ValueError:
        raise InvalidRequest(f"option {key}={options[key]!r} must be a number") from None


def asked(req: CreateNetworkRequest) -> Asked | None:
    """The overlay a create asks for (None: not an overlay network); refuses what can't be one."""
    options = req.driver_options
    name = options.get(OPT_OVERLAY, "")
    if not name:
        extra = [k for k in OPTIONS if k in options]
        if extra:
            raise InvalidRequest(f"option {extra[0]} needs -o {OPT_OVERLAY}=NAME")
        return None
    if not all(c.isalnum() or c in "-_." for c in name) or len(name) > 64:
        raise InvalidRequest(f"option {OPT_OVERLAY}={name!r}: an overlay's name is letters, "
                             "digits, '-', '_' and '.' (at most 64)")
    if chains.OPT_NETWORK in options:
        raise InvalidRequest(f"options {OPT_OVERLAY} and {chains.OPT_NETWORK} exclude each other: "
                             "an overlay network runs pycni's own bridge chain")
    if chains.docker_ipam(req):
        raise InvalidRequest(f"option {OPT_OVERLAY}: an overlay network takes its addresses from "
                             "this host's lease; create it with --ipam-driver null (and "
                             f"-o {OPT_SUBNET}=CIDR instead of --subnet)")
    if req.internal:
        raise Unsupported(f"option {OPT_OVERLAY}: an --internal overlay network is not supported "
                          "(it would cut the network off from the other hosts too)")
    if req.ipv6:
        raise Unsupported(f"option {OPT_OVERLAY}: an overlay network is IPv4 only (its range, "
                          "per-host subnets and VXLAN underlay); create it without --ipv6")
    if OPT_SUBNET not in options:
        raise InvalidRequest(f"option {OPT_OVERLAY}={name} needs -o {OPT_SUBNET}=CIDR, the whole "
                             "overlay's IPv4 range (the same on every host)")
    try:
        subnet = ipaddress.IPv4Network(options[OPT_SUBNET])
    except ValueError as exc:
        raise InvalidRequest(f"option {OPT_SUBNET}={options[OPT_SUBNET]!r} is not an IPv4 "
                             f"subnet: {exc}") from exc
    mtu = chains.bridge_options(options).mtu or None
    return Asked(name, subnet, _number(options, OPT_PREFIX), _number(options, OPT_VNI), mtu)


def bridge_name(req: CreateNetworkRequest) -> str:
    """The bridge of the overlay network on this host (``-o cni.bridge``, else pycni's name)."""
    return chains.bridge_options(req.driver_options).bridge or \
        chains.default_bridge_name(req.network_id)


def resolve(req: CreateNetworkRequest, joined: Joined, cache_dir: str) -> chains.Resolved:
    """The network's chain on this host's lease."""
    options = chains.bridge_options(req.driver_options)
    bridge = bridge_name(req)
    main = chains.gateway_bridge(bridge, {
        "type": "host-local",
        # host-local's reservations beside libcni's cache: a second pycni on one machine
        # (another host's, in tests) keeps its own
        "dataDir": os.path.join(cache_dir, "networks"),
        "ranges": [[{"subnet": str(joined.subnet), "gateway": joined.gateway}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }, joined.definition.mtu)
    raw = {
        "cniVersion": chains.ZERO_CONFIG_VERSION,
        "name": chains.cni_network_name(req.network_id),
        "plugins": [main, chains.portmap()],
    }
    return chains.Resolved(
        config=conflist_from_dict(
            raw, source=f"pycni overlay network {req.network_id[:12]} ({joined.name})"),
        mode=Mode.ZERO_CONFIG,
        ipam=Ipam.CNI,
        address_via=AddressVia.NONE,
        firewall=NetworkRules(
            bridge=bridge, subnets=(str(joined.subnet),), internal=False,
            icc=options.icc, masquerade=options.masquerade,
            peers=joined.vtep, peer_subnet=str(joined.definition.subnet),
        ),
    )
