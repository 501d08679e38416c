"""A chain that fails part-way through ADD, undone the way the driver undoes it.

libcni leaves cleanup to the runtime. pycni's :class:`AddFailed` carries ``partial``, the result of
the plugins that succeeded, and the driver undoes with ``cni.delete(net, rt, result=exc.partial)``:
DEL runs over the *whole* chain in reverse (plugins that never ran ADD must tolerate that, and the
reference plugins do), with ``partial`` as ``prevResult`` so firewall and bridge know what to remove.

Two 1.1.1 behaviours make the undo necessary even when nothing seems to have succeeded:

* a failing plugin can leave state: bridge creates the veth pair before it asks IPAM, and does not
  remove it when IPAM fails (``partial`` is ``None``, yet ``eth0`` sits in the namespace);
* no cache record is written for a failed ADD, so DEL has nothing to fall back on but ``partial``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shim.cni import CNI, AddFailed, RuntimeConf
from shim.cni.config import conflist_from_dict

from .helpers import (
    RecordingExec,
    assert_private_dirs_clean,
    cache_files,
    comment_for,
    iptables_rules,
    links_in,
    reservations,
    rules_tagged,
)

pytestmark = pytest.mark.integration

SUBNET = ipaddress.ip_network("10.201.6.0/24")


def bridge(bridge_name: str, cni_root: Path, **range_: str) -> dict[str, Any]:
    return {
        "type": "bridge",
        "bridge": bridge_name,
        "isGateway": True,
        "ipMasq": True,
        "ipam": {
            "type": "host-local",
            "dataDir": str(cni_root / "networks"),
            "ranges": [[{"subnet": str(SUBNET), **range_}]],
        },
    }


# tuning fails ADD when a sysctl does not exist, after bridge has done all its work; its DEL only
# restores a backup it never made, so it succeeds.
BROKEN_TUNING = {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.pycni_no_such_knob": "1"}}


def test_second_plugin_fails_and_delete_with_partial_undoes_the_first(
    cni: CNI,
    recorder: RecordingExec,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    name = f"pycni-it-{secrets.token_hex(3)}"
    net = conflist_from_dict(
        {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [bridge(links("br"), cni_root), BROKEN_TUNING, {"type": "firewall"}],
        }
    )
    rt = RuntimeConf(container_id=f"pycni-it-{secrets.token_hex(4)}", netns=ns())

    with pytest.raises(AddFailed) as excinfo:
        cni.add(net, rt)

    exc = excinfo.value
    assert exc.plugin == "tuning" and exc.verb == "ADD"
    assert "pycni_no_such_knob" in exc.msg
    assert exc.chain == 'type="tuning"'
    # bridge's work is real and described by partial; firewall never ran; nothing was cached
    assert exc.partial is not None
    (ip,) = exc.partial.ips
    assert ip.address.network == SUBNET
    assert "eth0" in links_in(rt.netns)
    assert len(reservations(cni_root)) == 1
    assert rules_tagged("nat", "POSTROUTING", comment_for(name, rt.container_id))
    assert recorder.sent("firewall", "ADD") == []
    assert cache_files(cni_root) == []

    cni.delete(net, rt, result=exc.partial)

    # DEL ran over the whole chain, in reverse, each plugin seeing partial as prevResult
    dels = [(c.plugin, c.stdin.get("prevResult")) for c in recorder.calls if c.command == "DEL"]
    assert [p for p, _ in dels] == ["firewall", "tuning", "bridge"]
    assert all(prev == exc.partial.to_json() for _, prev in dels)
    assert "eth0" not in links_in(rt.netns)
    assert rules_tagged("nat", "POSTROUTING", comment_for(name, rt.container_id)) == []
    assert not any(str(ip.address.ip) in rule for rule in iptables_rules("filter"))
    assert_private_dirs_clean(cni_root)


def test_first_plugin_fails_and_delete_still_removes_what_it_left(
    cni: CNI, cni_root: Path, ns: Callable[[], str], links: Callable[[str], str]
) -> None:
    """IPAM exhausted: bridge fails with partial None but has already plugged a veth in."""
    name = f"pycni-it-{secrets.token_hex(3)}"
    only = str(SUBNET[10])
    net = conflist_from_dict(
        {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                bridge(links("br"), cni_root, rangeStart=only, rangeEnd=only),
                {"type": "firewall"},
            ],
        }
    )
    first = RuntimeConf(container_id=f"pycni-it-1-{secrets.token_hex(4)}", netns=ns())
    second = RuntimeConf(container_id=f"pycni-it-2-{secrets.token_hex(4)}", netns=ns())
    cni.add(net, first)

    with pytest.raises(AddFailed) as excinfo:
        cni.add(net, second)

    exc = excinfo.value
    assert exc.plugin == "bridge" and "no IP addresses available" in exc.msg
    assert exc.partial is None
    assert "eth0" in links_in(second.netns)  # bridge's leftover

    cni.delete(net, second, result=exc.partial)

    assert "eth0" not in links_in(second.netns)
    # the first container is untouched: its address, its interface, its rules
    (reserved,) = reservations(cni_root)
    assert reserved == f"{name}/{only}"
    assert "eth0" in links_in(first.netns)
    assert rules_tagged("nat", "POSTROUTING", comment_for(name, first.container_id))
    assert f"-A CNI-FORWARD -s {only}/32 -j ACCEPT" in iptables_rules("filter")

    cni.delete(net, first)
    assert_private_dirs_clean(cni_root)
