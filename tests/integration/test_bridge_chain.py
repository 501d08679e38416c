"""bridge + portmap + firewall, the shape of the driver's own bridge chains, with host-local.

Two namespaces are attached, talk to each other, and are detached; the test then proves the host
is exactly as before (``leak_check``) and the private cache and IPAM dirs are empty.

Plugin behaviour these tests pin down (reference plugins 1.1.1), because the driver relies on it:

* portmap removes its per-container chain (``CNI-DN-…``) and the jump to it only when DEL carries
  the same ``runtimeConfig.portMappings`` as ADD; pycni replays the capability args it cached.
* firewall removes its per-IP rules in ``CNI-FORWARD`` from DEL's ``prevResult``; without one it
  removes nothing and still succeeds.
* bridge never deletes the bridge itself, and tears its ipMasq chain down only while the container
  namespace still exists (it reads the addresses from the interface): DEL must come before the
  namespace is destroyed (see the second test).
* portmap's CHECK fails for IPv4-only mappings ("could not check ipv6 dnat"): it checks an ip6tables
  chain it never created.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shim.cni import CNI, NetworkConfigList, Result, RuntimeConf
from shim.cni.config import conflist_from_dict
from shim.errors import CNIError

from .helpers import (
    RecordingExec,
    addresses_in,
    assert_private_dirs_clean,
    chain_exists,
    comment_for,
    delete_rule,
    iptables_rules,
    links_in,
    ping,
    rules_tagged,
    sh,
)

pytestmark = pytest.mark.integration

SUBNET = ipaddress.IPv4Network("10.201.1.0/24")
QUIRK_SUBNET = ipaddress.IPv4Network("10.201.7.0/24")
FIREWALL_SUBNET = ipaddress.IPv4Network("10.201.8.0/24")


def chain_conf(
    name: str, bridge: str, cni_root: Path, subnet: ipaddress.IPv4Network
) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(cni_root / "networks"),
                    "ranges": [[{"subnet": str(subnet)}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    }


def without(net: NetworkConfigList, plugin_type: str) -> NetworkConfigList:
    """The same network (same name, so the same cache records) minus one plugin."""
    raw = dict(net.raw, plugins=[p for p in net.raw["plugins"] if p["type"] != plugin_type])
    return conflist_from_dict(raw)


def dnat_chain(network: str, container_id: str) -> str | None:
    """The per-container chain portmap jumps to from CNI-HOSTPORT-DNAT, if any."""
    tag = "dnat " + comment_for(network, container_id)
    rules = rules_tagged("nat", "CNI-HOSTPORT-DNAT", tag)
    assert len(rules) <= 1, rules
    return rules[0].split(" -j ")[-1].strip() if rules else None


def masq_rules(network: str, container_id: str) -> list[str]:
    """bridge's ipMasq jump from POSTROUTING for this container."""
    return rules_tagged("nat", "POSTROUTING", comment_for(network, container_id))


def container_ip(result: Result) -> ipaddress.IPv4Interface:
    ((index, _iface),) = result.container_interfaces()
    ips = result.ips_for(index)
    assert len(ips) == 1, result.to_json()
    address = ips[0].address
    assert isinstance(address, ipaddress.IPv4Interface)
    return address


def test_two_namespaces_attach_talk_check_and_detach_cleanly(
    cni: CNI,
    recorder: RecordingExec,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    name = f"pycni-it-{secrets.token_hex(3)}"
    net = conflist_from_dict(chain_conf(name, links("br"), cni_root, SUBNET))
    host_ports = [20000 + secrets.randbelow(10000), 30000 + secrets.randbelow(10000)]
    attachments: list[tuple[RuntimeConf, Result]] = []
    for n, host_port in enumerate(host_ports):
        path = ns()
        rt = RuntimeConf(
            container_id=f"pycni-it-{n}-{secrets.token_hex(4)}",
            netns=path,
            ifname="eth0",
            capability_args={
                "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]
            },
        )
        attachments.append((rt, cni.add(net, rt)))

    ips = []
    dnat_chains = []
    for rt, result in attachments:
        address = container_ip(result)
        assert address.network == SUBNET
        assert result.ips[0].gateway == SUBNET[1]
        assert addresses_in(rt.netns) == [str(address)]
        assert [i.sandbox for _, i in result.container_interfaces()] == [rt.netns]
        ips.append(address.ip)
        # host-local reserved it under the test's own dataDir, owned by this container
        reserved = cni_root / "networks" / name / str(address.ip)
        assert reserved.read_text().split() == [rt.container_id, "eth0"]
        # per-container iptables state of each plugin exists while attached
        chain = dnat_chain(name, rt.container_id)
        assert chain is not None and chain.startswith("CNI-DN-")
        dnat_chains.append(chain)
        assert any(f"--to-destination {address.ip}:80" in r for r in iptables_rules("nat", chain))
        assert masq_rules(name, rt.container_id)
        assert f"-A CNI-FORWARD -s {address.ip}/32 -j ACCEPT" in iptables_rules("filter")

    (rt_a, _), (rt_b, _) = attachments
    assert ping(rt_a.netns, str(ips[1])), "namespace A cannot reach B across the bridge"
    assert ping(rt_b.netns, str(ips[0])), "namespace B cannot reach A across the bridge"

    for rt, _ in attachments:
        try:
            cni.check(net, rt)
        except CNIError as exc:
            # portmap 1.1.1 checks its ip6tables chain even for IPv4-only mappings, which it never
            # created; any other failure is real. The rest of the chain must still CHECK clean.
            assert exc.plugin == "portmap" and "could not check ipv6 dnat" in exc.msg, exc
            cni.check(without(net, "portmap"), rt)

    for (rt, _), chain in zip(attachments, dnat_chains):
        cni.delete(net, rt)
        assert "eth0" not in links_in(rt.netns)
        assert dnat_chain(name, rt.container_id) is None
        assert not chain_exists("nat", chain)
        assert masq_rules(name, rt.container_id) == []

    # DEL replayed ADD's portMappings (cached capability args) and gave firewall the cached result
    for (rt, result), sent in zip(attachments, recorder.sent("portmap", "DEL")):
        assert sent["runtimeConfig"] == {"portMappings": rt.capability_args["portMappings"]}
        assert sent["prevResult"] == result.to_json()
    for ip, sent in zip(ips, recorder.sent("firewall", "DEL")):
        assert sent["prevResult"]["ips"][0]["address"].startswith(f"{ip}/")
    assert_private_dirs_clean(cni_root)
    assert not any(str(ip) in rule for ip in ips for rule in iptables_rules("filter"))

    # DEL again: nothing cached any more, everything already gone; it must still succeed,
    # both while the namespace exists and after it has been destroyed.
    for rt, _ in attachments:
        cni.delete(net, rt)
        sh("ip", "netns", "delete", rt.netns.rsplit("/", 1)[-1])
        cni.delete(net, rt)
    assert_private_dirs_clean(cni_root)


def test_bridge_del_after_the_namespace_is_gone_leaks_its_ipmasq_rules(
    cni: CNI,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    """Records a 1.1.1 bridge quirk the driver must design around: DEL before destroying the netns.

    bridge's DEL learns the container's addresses from the interface inside the namespace. With the
    namespace gone it still releases the IP (host-local) but skips ``ip.TeardownIPMasq``, so the
    ``CNI-<hash>`` nat chain and the POSTROUTING jump to it stay forever.
    """
    name = f"pycni-it-{secrets.token_hex(3)}"
    net = conflist_from_dict(chain_conf(name, links("br"), cni_root, QUIRK_SUBNET))
    rt = RuntimeConf(container_id=f"pycni-it-{secrets.token_hex(4)}", netns=ns())
    address = container_ip(cni.add(net, rt))

    sh("ip", "netns", "delete", rt.netns.rsplit("/", 1)[-1])
    cni.delete(net, rt)

    assert_private_dirs_clean(cni_root)  # the address was released all the same
    leaked = masq_rules(name, rt.container_id)
    assert len(leaked) == 1 and f"-s {address.ip}/32" in leaked[0], leaked
    chain = leaked[0].split(" -j ")[-1].strip()
    assert chain_exists("nat", chain)
    # undo the leak by hand, as the driver's own cleanup would have to
    delete_rule("nat", leaked[0])
    sh("iptables", "-w", "-t", "nat", "-F", chain)
    sh("iptables", "-w", "-t", "nat", "-X", chain)


def test_firewall_del_without_the_result_leaves_its_rules_until_del_gets_it(
    cni: CNI,
    recorder: RecordingExec,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    """Why the driver keeps each ADD result in its own state, not only in libcni's cache.

    firewall's DEL removes the per-IP rules named by ``prevResult``; without one it succeeds and
    removes nothing. A DEL that lost the cache record therefore "works" and leaks, and a later DEL
    that is handed the result (``cni.delete(..., result=...)``) is what cleans up.
    """
    name = f"pycni-it-{secrets.token_hex(3)}"
    raw = chain_conf(name, links("br"), cni_root, FIREWALL_SUBNET)
    raw["plugins"] = [dict(raw["plugins"][0], ipMasq=False), {"type": "firewall"}]
    net = conflist_from_dict(raw)
    rt = RuntimeConf(container_id=f"pycni-it-{secrets.token_hex(4)}", netns=ns())
    result = cni.add(net, rt)
    address = container_ip(result)
    rule = f"-A CNI-FORWARD -s {address.ip}/32 -j ACCEPT"
    assert rule in iptables_rules("filter")
    cni.cache.delete(net.name, rt.container_id, rt.ifname)  # the record is lost

    cni.delete(net, rt)

    assert "prevResult" not in recorder.sent("firewall", "DEL")[0]
    assert_private_dirs_clean(cni_root)  # bridge released the address and removed the veth
    assert rule in iptables_rules("filter")  # but firewall had nothing to go by

    cni.delete(net, rt, result=result)

    assert rule not in iptables_rules("filter")
    assert not any(str(address.ip) in r for r in iptables_rules("filter"))
