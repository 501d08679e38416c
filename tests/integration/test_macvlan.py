"""macvlan (mode bridge) + host-local on a parent link the test creates.

No bridge, no iptables: two namespaces get macvlan children of one isolated parent and reach each
other through it. The parent is a dummy link, or a veth end where the kernel has no dummy driver
(see the ``parent_link`` fixture); it is deleted at teardown, before the leak check.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from shim.cni import CNI, RuntimeConf
from shim.cni.config import conflist_from_dict

from .helpers import addresses_in, assert_private_dirs_clean, links_in, ping, sh

pytestmark = pytest.mark.integration

SUBNET = ipaddress.ip_network("10.201.2.0/24")


def test_macvlan_children_of_one_parent_reach_each_other(
    cni: CNI, cni_root: Path, ns: Callable[[], str], parent_link: str
) -> None:
    name = f"pycni-it-{secrets.token_hex(3)}"
    net = conflist_from_dict(
        {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "macvlan",
                    "master": parent_link,
                    "mode": "bridge",
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cni_root / "networks"),
                        "ranges": [[{"subnet": str(SUBNET)}]],
                    },
                }
            ],
        }
    )
    rts = [
        RuntimeConf(container_id=f"pycni-it-{n}-{secrets.token_hex(4)}", netns=ns()) for n in (1, 2)
    ]
    ips = []
    for rt in rts:
        result = cni.add(net, rt)
        ((index, iface),) = result.container_interfaces()
        assert iface.name == "eth0" and iface.sandbox == rt.netns
        (ip,) = result.ips_for(index)
        assert ip.address.network == SUBNET
        assert addresses_in(rt.netns) == [str(ip.address)]
        # the child really is a macvlan of our parent
        details = sh("ip", "-n", rt.netns.rsplit("/", 1)[-1], "-d", "link", "show", "eth0").stdout
        assert "macvlan mode bridge" in details
        ips.append(str(ip.address.ip))
    assert len(set(ips)) == 2

    assert ping(rts[0].netns, ips[1])
    assert ping(rts[1].netns, ips[0])
    for rt in rts:
        cni.check(net, rt)

    for rt in rts:
        cni.delete(net, rt)
        assert "eth0" not in links_in(rt.netns)
        cni.delete(net, rt)  # and again: already gone is success
    assert_private_dirs_clean(cni_root)
