"""The per-network rules of zero-config networks (:mod:`shim.firewall`), on a fake iptables.

The module's runner is replaced by :class:`FakeIptables`, which keeps chains and rules per family
and table the way iptables does, and fails as iptables would (a rule that isn't there, a chain
still referenced). No iptables ever runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shim import dnat, firewall
from shim import iptables as ipt
from shim.errors import FirewallError
from shim.state import NetworkRules

pytestmark = pytest.mark.unit

NET = "cd" * 32
NET2 = "34" * 32
TAG = ["-m", "comment", "--comment", f"pycni:{NET[:12]}"]
BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
           "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
           "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")}

Rule = tuple[str, ...]


class FakeIptables:
    """iptables and ip6tables in memory: ``tables[(tool, table)][chain]`` is a list of rules."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], dict[str, list[Rule]]] = {
            (tool, table): {chain: [] for chain in chains}
            for tool in ("iptables", "ip6tables") for table, chains in BUILTIN.items()
        }
        self.calls: list[list[str]] = []
        #: argv prefix (after ``-w 10``) → stderr: that command fails with status 1
        self.refuse: dict[tuple[str, ...], str] = {}

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        tool, wait, seconds, t, table, op, *rest = argv
        assert (wait, seconds, t) == ("-w", "10", "-t"), argv
        for prefix, stderr in self.refuse.items():
            if tuple(argv[3:3 + len(prefix)]) == prefix:
                return 1, "", stderr
        chains = self.tables[(tool, table)]
        if op == "-n":  # -n -L CHAIN: does it exist?
            assert rest[0] == "-L", argv
            return (0, "", "") if rest[1] in chains else (1, "", "No chain by that name")
        chain, rule = rest[0], tuple(rest[1:])
        if op == "-N":
            if chain in chains:
                return 1, "", "iptables: Chain already exists."
            chains[chain] = []
            return 0, "", ""
        if chain not in chains:
            return 1, "", f"iptables: No chain/target/match by that name ({chain})."
        rules = chains[chain]
        if op == "-C":
            return (0, "", "") if rule in rules else (1, "", "Bad rule")
        if op == "-A":
            rules.append(rule)
        elif op == "-I":
            position, *spec = rule
            rules.insert(int(position) - 1, tuple(spec))
        elif op == "-D":
            if rule not in rules:
                return 1, "", "Bad rule (does a matching rule exist in that chain?)."
            rules.remove(rule)
        elif op == "-S":
            lines = [f"-N {chain}"] + [f"-A {chain} {' '.join(r)}" for r in rules]
            return 0, "\n".join(lines) + "\n", ""
        elif op == "-X":
            if rules or any(("-j", chain) == r[-2:] for rs in chains.values() for r in rs):
                return 1, "", "iptables: Directory not empty / Too many links."
            del chains[chain]
        else:
            raise AssertionError(f"unexpected iptables call {argv}")
        return 0, "", ""

    def chain(self, tool: str, table: str, chain: str) -> list[Rule] | None:
        return self.tables[(tool, table)].get(chain)

    def own(self) -> dict[tuple[str, str, str], list[Rule]]:
        """Every non-builtin chain and every rule mentioning pycni, by (tool, table, chain)."""
        found = {}
        for (tool, table), chains in self.tables.items():
            for name, rules in chains.items():
                mine = [r for r in rules if "PYCNI" in " ".join(r) or "pycni:" in " ".join(r)]
                if name not in BUILTIN[table] or mine:
                    found[(tool, table, name)] = mine if name in BUILTIN[table] else rules
        return found


@pytest.fixture
def iptables(monkeypatch: pytest.MonkeyPatch) -> FakeIptables:
    fake = FakeIptables()
    monkeypatch.setattr(ipt, "runner", fake)
    monkeypatch.setattr(firewall, "bridged_frames_filtered", lambda version: True)
    return fake


def spec(bridge: str, subnets: list[str], **rest: Any) -> NetworkRules:
    return NetworkRules(bridge, tuple(subnets), **rest)


def forward_rules(bridge: str, tag: list[str] = TAG, *, icc: str = "ACCEPT",
                  docker: bool = False) -> list[Rule]:
    """PYCNI-FORWARD for a network; ``docker``: with the jumps to Docker's isolation chains,
    at the top."""
    out: list[Rule] = [("-i", bridge, "!", "-o", bridge, *tag, "-j", docker)
                       for docker in (DOCKER_STAGE_1, DOCKER_STAGE_2)]
    return [
        *(out if docker else []),
        ("-i", bridge, "-o", bridge, *tag, "-j", icc),
        ("-i", bridge, "!", "-o", bridge, *tag, "-j", "ACCEPT"),
        ("-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"),
        ("-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", *tag, "-j", "ACCEPT"),
    ]


def keep_out(bridge: str, tag: list[str] = TAG) -> list[Rule]:
    """PYCNI-ISOLATION for a network: nothing new comes in from elsewhere."""
    return [("!", "-i", bridge, "-o", bridge, "-m", "conntrack", "!", "--ctstate",
             "RELATED,ESTABLISHED,DNAT", *tag, "-j", "DROP")]


def internal_isolation(bridge: str, tag: list[str] = TAG) -> list[Rule]:
    return [("-i", bridge, "!", "-o", bridge, *tag, "-j", "DROP"),
            ("!", "-i", bridge, "-o", bridge, *tag, "-j", "DROP")]


def masquerade(subnet: str, bridge: str, tag: list[str] = TAG) -> Rule:
    return ("-s", subnet, "!", "-o", bridge, *tag, "-j", "MASQUERADE")


JUMP_FORWARD = ("-j", "PYCNI-FORWARD")
JUMP_NAT = ("-j", "PYCNI-POSTROUTING")
JUMP_ISOLATION = ("-j", "PYCNI-ISOLATION")
DOCKER_STAGE_1 = "DOCKER-ISOLATION-STAGE-1"
DOCKER_STAGE_2 = "DOCKER-ISOLATION-STAGE-2"


def docker_made_its_chains(iptables: FakeIptables, tool: str = "iptables") -> None:
    """What dockerd (iptables on) has: its isolation chains, jumped to from FORWARD."""
    filt = iptables.tables[(tool, "filter")]
    filt["DOCKER-ISOLATION-STAGE-1"] = [("-j", "RETURN")]
    filt[DOCKER_STAGE_2] = [("-j", "RETURN")]
    filt["FORWARD"].insert(0, ("-j", "DOCKER-ISOLATION-STAGE-1"))


# --- what a network gets -------------------------------------------------------------------------


def test_an_ipv4_network_forwards_masquerades_and_keeps_others_out(
        iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("pycni-br0", ["10.200.9.0/24"], internal=False))
    assert iptables.own() == {
        ("iptables", "filter", "FORWARD"): [JUMP_FORWARD],
        ("iptables", "filter", "PYCNI-FORWARD"): forward_rules("pycni-br0"),
        ("iptables", "mangle", "FORWARD"): [JUMP_ISOLATION],
        ("iptables", "mangle", "PYCNI-ISOLATION"): keep_out("pycni-br0"),
        ("iptables", "nat", "POSTROUTING"): [JUMP_NAT],
        ("iptables", "nat", "PYCNI-POSTROUTING"): [masquerade("10.200.9.0/24", "pycni-br0")],
    }
    assert not [c for c in iptables.calls if c[0] == "ip6tables"]  # IPv6 left alone


def test_an_ipv6_network_gets_the_same_rules_from_ip6tables(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("pycni-br0", ["fd00:200:9::/64"], internal=False))
    assert iptables.own() == {
        ("ip6tables", "filter", "FORWARD"): [JUMP_FORWARD],
        ("ip6tables", "filter", "PYCNI-FORWARD"): forward_rules("pycni-br0"),
        ("ip6tables", "mangle", "FORWARD"): [JUMP_ISOLATION],
        ("ip6tables", "mangle", "PYCNI-ISOLATION"): keep_out("pycni-br0"),
        ("ip6tables", "nat", "POSTROUTING"): [JUMP_NAT],
        ("ip6tables", "nat", "PYCNI-POSTROUTING"): [masquerade("fd00:200:9::/64", "pycni-br0")],
    }
    assert not [c for c in iptables.calls if c[0] == "iptables"]


def test_where_docker_isolates_its_bridges_they_are_kept_out_too(
        iptables: FakeIptables) -> None:
    """Traffic out of the network into one of Docker's bridges meets Docker's own list of them
    first, before the rule that lets the network out."""
    docker_made_its_chains(iptables)
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24", "fd00:200:9::/64"], internal=False))
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == forward_rules(
        "br0", docker=True)
    # Docker's ip6tables are off by default: no chain of its to jump to there.
    assert iptables.chain("ip6tables", "filter", "PYCNI-FORWARD") == forward_rules("br0")
    assert iptables.chain("iptables", "filter", DOCKER_STAGE_2) == [("-j", "RETURN")]
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24", "fd00:200:9::/64"], internal=False))
    assert not [k for k in iptables.own() if "PYCNI" in k[2]]
    assert iptables.chain("iptables", "filter", "FORWARD") == [
        ("-j", "DOCKER-ISOLATION-STAGE-1")]  # Docker's left as they were


def test_dockers_drops_stand_above_the_networks_accept_whenever_they_come(
        iptables: FakeIptables) -> None:
    """Docker 28 keeps an --internal network's drops in DOCKER-ISOLATION-STAGE-1, and pycni's
    jump in FORWARD may sit above Docker's (who started last decides): the network's ACCEPT
    must not let it into Docker's networks. A network made before Docker's chains were there
    (or by a pycni without the jumps) gets them above its ACCEPT when its rules go in again."""
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == forward_rules("br0")
    docker_made_its_chains(iptables)
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))  # pycni's start
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == forward_rules(
        "br0", docker=True)


def test_on_docker_29_its_internal_and_bridge_chains_judge(iptables: FakeIptables) -> None:
    """Docker 29 has no DOCKER-ISOLATION-STAGE-* chains: an --internal network's drops are in
    DOCKER-INTERNAL, and each bridge's published ports and default DROP are reached through
    DOCKER-BRIDGE (moby 29's iptabler). pycni asks both, in Docker's order, before its ACCEPT."""
    filt = iptables.tables[("iptables", "filter")]
    filt["DOCKER-INTERNAL"] = []
    filt["DOCKER-BRIDGE"] = []
    filt["DOCKER-FORWARD"] = [("-j", "DOCKER-INTERNAL"), ("-j", "DOCKER-BRIDGE")]
    filt["FORWARD"].insert(0, ("-j", "DOCKER-FORWARD"))
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    judges = [("-i", "br0", "!", "-o", "br0", *TAG, "-j", c)
              for c in ("DOCKER-INTERNAL", "DOCKER-BRIDGE")]
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == [
        *judges, *forward_rules("br0")]
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert not [k for k in iptables.own() if "PYCNI" in k[2]]
    assert filt["DOCKER-FORWARD"] == [("-j", "DOCKER-INTERNAL"), ("-j", "DOCKER-BRIDGE")]


def test_removal_copes_with_dockers_chain_gone_since(iptables: FakeIptables) -> None:
    """dockerd rebuilds its chains when it starts; pycni's jump to one outlives that, and
    removal takes it whether or not Docker is still there."""
    docker_made_its_chains(iptables)
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert not [k for k in iptables.own() if "PYCNI" in k[2]]
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    del iptables.tables[("iptables", "filter")]["PYCNI-FORWARD"][0]  # as if never made
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert not [k for k in iptables.own() if "PYCNI" in k[2]]


def test_a_dual_stack_network_gets_both_families(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("pycni-br0", ["10.200.9.0/24", "fd00:200:9::/64"], internal=False))
    for tool, subnet in (("iptables", "10.200.9.0/24"), ("ip6tables", "fd00:200:9::/64")):
        assert iptables.chain(tool, "filter", "PYCNI-FORWARD") == forward_rules("pycni-br0")
        assert iptables.chain(tool, "mangle", "PYCNI-ISOLATION") == keep_out("pycni-br0")
        assert iptables.chain(tool, "nat", "PYCNI-POSTROUTING") == [
            masquerade(subnet, "pycni-br0")]


def test_every_subnet_of_a_family_is_masqueraded(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24", "10.200.10.0/24"], internal=False))
    assert iptables.chain("iptables", "nat", "PYCNI-POSTROUTING") == [
        masquerade("10.200.9.0/24", "br0"), masquerade("10.200.10.0/24", "br0")]
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == forward_rules("br0")


@pytest.mark.parametrize("subnets", [["10.200.9.0/24"], ["fd00:200:9::/64"],
                                     ["10.200.9.0/24", "fd00:200:9::/64"]])
def test_an_internal_network_only_lets_its_containers_talk(iptables: FakeIptables,
                                                           subnets: list[str]) -> None:
    docker_made_its_chains(iptables)
    firewall.add_network(NET, spec("br0", subnets, internal=True))
    tools = {"iptables" if ":" not in s else "ip6tables" for s in subnets}
    assert {k: v for k, v in iptables.own().items() if "DOCKER" not in k[2]} == {
        **{(tool, "filter", "FORWARD"): [JUMP_FORWARD] for tool in tools},
        **{(tool, "filter", "PYCNI-FORWARD"): forward_rules("br0")[:1] for tool in tools},
        **{(tool, "mangle", "FORWARD"): [JUMP_ISOLATION] for tool in tools},
        **{(tool, "mangle", "PYCNI-ISOLATION"): internal_isolation("br0") for tool in tools},
    }  # nothing in or out, no masquerading, not even an empty nat chain


def test_no_subnets_means_ipv4_forwarding_only(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", [], internal=False))
    assert iptables.own() == {
        ("iptables", "filter", "FORWARD"): [JUMP_FORWARD],
        ("iptables", "filter", "PYCNI-FORWARD"): forward_rules("br0"),
        ("iptables", "mangle", "FORWARD"): [JUMP_ISOLATION],
        ("iptables", "mangle", "PYCNI-ISOLATION"): keep_out("br0"),
    }


# --- Docker's bridge options ---------------------------------------------------------------------


@pytest.mark.parametrize("internal", [False, True])
def test_without_icc_the_containers_are_kept_apart(iptables: FakeIptables,
                                                   internal: bool) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=internal, icc=False))
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD")[0] == (  # type: ignore[index]
        "-i", "br0", "-o", "br0", *TAG, "-j", "DROP")
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=internal, icc=False))
    assert iptables.own() == {}


def test_without_icc_needs_bridged_frames_to_pass_iptables(
        iptables: FakeIptables, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall, "bridged_frames_filtered", lambda version: version == 4)
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False, icc=False))
    with pytest.raises(FirewallError, match=r"enable_icc=false needs frames bridged between "
                       r"containers to pass ip6tables.*net.bridge.bridge-nf-call-ip6tables=1"):
        firewall.add_network(NET2, spec("br1", ["fd00:200:9::/64"], internal=False, icc=False))
    firewall.add_network(NET2, spec("br1", ["fd00:200:9::/64"], internal=False))  # icc on: fine


def test_without_masquerade_nothing_is_masqueraded(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False, masquerade=False))
    assert iptables.chain("iptables", "nat", "PYCNI-POSTROUTING") is None
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == forward_rules("br0")
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False, masquerade=False))
    assert iptables.own() == {}


def test_the_real_br_netfilter_probe_reads_proc() -> None:
    assert firewall.bridged_frames_filtered is firewall.bridge_nf_call
    assert isinstance(firewall.bridge_nf_call(4), bool)


def test_the_jump_goes_first_below_docker_user_and_adding_twice_changes_nothing(
        iptables: FakeIptables) -> None:
    """The admin's DOCKER-USER comes first for pycni's networks as for Docker's; pycni's jump
    goes right below it, above everything else Docker has in FORWARD."""
    user, forward = ("-j", "DOCKER-USER"), ("-j", "DOCKER-FORWARD")
    iptables.tables[("iptables", "filter")]["FORWARD"] += [user, forward]
    iptables.tables[("iptables", "filter")]["DOCKER-USER"] = [("-j", "RETURN")]
    iptables.tables[("iptables", "filter")]["DOCKER-FORWARD"] = []
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    once, calls = copy.deepcopy(iptables.tables), len(iptables.calls)
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert iptables.tables == once
    assert iptables.chain("iptables", "filter", "FORWARD") == [user, JUMP_FORWARD, forward]
    assert {c[5] for c in iptables.calls[calls:]} == {"-n", "-C"}  # only looked


def test_every_call_waits_for_the_xtables_lock(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert iptables.calls and all(c[1:3] == ["-w", "10"] for c in iptables.calls)


# --- removal -------------------------------------------------------------------------------------


def test_removing_the_last_network_leaves_nothing_of_pycni(iptables: FakeIptables) -> None:
    subnets = ["10.200.9.0/24", "fd00:200:9::/64"]
    firewall.add_network(NET, spec("br0", subnets, internal=False))
    firewall.remove_network(NET, spec("br0", subnets, internal=False))
    assert iptables.own() == {}
    firewall.remove_network(NET, spec("br0", subnets, internal=False))  # repeat-safe
    assert iptables.own() == {}


def test_removal_takes_only_its_own_rules(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    firewall.add_network(NET2, spec("br1", ["10.200.10.0/24"], internal=True))
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    tag2 = ["-m", "comment", "--comment", f"pycni:{NET2[:12]}"]
    assert iptables.own() == {
        ("iptables", "filter", "FORWARD"): [JUMP_FORWARD],
        ("iptables", "filter", "PYCNI-FORWARD"): forward_rules("br1", tag2)[:1],
        ("iptables", "mangle", "FORWARD"): [JUMP_ISOLATION],
        ("iptables", "mangle", "PYCNI-ISOLATION"): internal_isolation("br1", tag2),
    }  # the nat chain, empty now, went with its jump


def test_a_duplicated_rule_is_removed_in_full(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    iptables.tables[("iptables", "filter")]["PYCNI-FORWARD"] += forward_rules("br0")
    iptables.tables[("iptables", "mangle")]["PYCNI-ISOLATION"] += keep_out("br0")
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert iptables.own() == {}


def test_removing_a_network_never_added_is_fine(iptables: FakeIptables) -> None:
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert iptables.own() == {}


def test_a_chain_someone_else_added_to_stays(iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=True))
    stranger = ("-i", "eth9", "-j", "ACCEPT")
    iptables.tables[("iptables", "filter")]["PYCNI-FORWARD"].append(stranger)
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=True))
    assert iptables.chain("iptables", "filter", "PYCNI-FORWARD") == [stranger]
    assert iptables.chain("iptables", "filter", "FORWARD") == [JUMP_FORWARD]


# --- failures ------------------------------------------------------------------------------------


def test_a_refused_rule_is_a_firewall_error_naming_the_command(iptables: FakeIptables) -> None:
    iptables.refuse[("-t", "nat", "-A")] = "iptables: No chain/target/match by that name.\n"
    with pytest.raises(FirewallError) as caught:
        firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    message = str(caught.value)
    assert message.startswith("iptables -t nat -A PYCNI-POSTROUTING -s 10.200.9.0/24 ")
    assert message.endswith(": iptables: No chain/target/match by that name.")


def test_the_real_runner_translates_a_missing_binary() -> None:
    with pytest.raises(FirewallError, match="/nonexistent/iptables -w 10 -S"):
        ipt.run_subprocess(["/nonexistent/iptables", "-w", "10", "-S"])


def test_the_real_runner_is_the_default() -> None:
    assert ipt.runner is ipt.run_subprocess


def test_an_overlay_network_lets_its_vtep_in_and_does_not_masquerade_the_overlay(
        iptables: FakeIptables) -> None:
    firewall.add_network(NET, spec("pycni-br0", ["10.202.1.0/24"], internal=False,
                                   peers="pycni.42", peer_subnet="10.202.0.0/16"))
    peers_in = ("-i", "pycni.42", "-o", "pycni-br0", *TAG, "-j", "ACCEPT")
    forward = forward_rules("pycni-br0")
    assert iptables.own() == {
        ("iptables", "filter", "FORWARD"): [JUMP_FORWARD],
        ("iptables", "filter", "PYCNI-FORWARD"): [forward[0], peers_in, *forward[1:]],
        ("iptables", "mangle", "FORWARD"): [JUMP_ISOLATION],
        # before the network's drop: what comes from the VTEP is the overlay's own traffic
        ("iptables", "mangle", "PYCNI-ISOLATION"): [
            ("-i", "pycni.42", "-o", "pycni-br0", *TAG, "-j", "RETURN"), *keep_out("pycni-br0")],
        ("iptables", "nat", "POSTROUTING"): [JUMP_NAT],
        ("iptables", "nat", "PYCNI-POSTROUTING"): [
            ("-s", "10.202.1.0/24", "-d", "10.202.0.0/16", *TAG, "-j", "RETURN"),
            masquerade("10.202.1.0/24", "pycni-br0")],
    }
    firewall.remove_network(NET, spec("pycni-br0", ["10.202.1.0/24"], internal=False,
                                      peers="pycni.42", peer_subnet="10.202.0.0/16"))
    assert iptables.own() == {}


# --- the loopback guard ---------------------------------------------------------------------------


def guard(tag: str) -> Rule:
    return ("-d", "127.0.0.0/8", "!", "-i", "lo", "-m", "conntrack", "!", "--ctstate",
            "RELATED,ESTABLISHED,DNAT", "-m", "comment", "--comment", f"pycni:{tag}", "-j", "DROP")


def test_the_guard_drops_what_comes_for_the_loopback_from_outside_unless_dnatd(
        iptables: FakeIptables) -> None:
    firewall.add_guard("net1")
    firewall.add_guard("net1")  # idempotent
    firewall.add_guard("net2")
    filt = iptables.tables[("iptables", "filter")]
    assert filt["INPUT"][0] == ("-j", "PYCNI-LOCALNET")
    assert filt["PYCNI-LOCALNET"] == [guard("net1"), guard("net2")]
    assert "PYCNI-LOCALNET" not in iptables.tables[("ip6tables", "filter")]  # ::1 needs none


def test_the_last_guard_takes_its_chain_and_jump_with_it(iptables: FakeIptables) -> None:
    firewall.add_guard("net1")
    firewall.add_guard("net2")
    firewall.remove_guard("net1")
    assert iptables.tables[("iptables", "filter")]["PYCNI-LOCALNET"] == [guard("net2")]
    firewall.remove_guard("net2")
    assert "PYCNI-LOCALNET" not in iptables.tables[("iptables", "filter")]
    firewall.remove_guard("net2")  # repeat-safe
    assert "PYCNI-LOCALNET" not in iptables.tables[("iptables", "filter")]
    assert iptables.own() == {}
    assert iptables.tables[("iptables", "filter")]["INPUT"] == []


def test_route_localnet_is_closed_on_interfaces_that_still_exist(tmp_path: Path) -> None:
    for name, value in (("br0", "1"), ("br1", "0")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "route_localnet").write_text(value + "\n")
    firewall.close_localnet(["br0", "br1", "gone0"], root=str(tmp_path))
    assert (tmp_path / "br0" / "route_localnet").read_text() == "0"
    assert (tmp_path / "br1" / "route_localnet").read_text() == "0\n"  # not rewritten


# --- published ports of zero-config networks -----------------------------------------------------


PORTS = [dnat.PortRule(4, "tcp", "", 8080, "10.200.9.7", 80, "br0"),
         dnat.PortRule(6, "udp", "fd00::1", 5353, "fd00::7", 53, "br0")]


@pytest.fixture
def fresh_dnat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnat, "_dnat_ready", set())


def test_published_ports_are_dnat_rules_as_dockers(iptables: FakeIptables,
                                                   fresh_dnat: None) -> None:
    firewall.publish("ep1", PORTS)
    nat4, nat6 = iptables.tables[("iptables", "nat")], iptables.tables[("ip6tables", "nat")]
    assert nat4["PREROUTING"][0] == ("-m", "addrtype", "--dst-type", "LOCAL", "-j", "PYCNI-DNAT")
    assert nat4["OUTPUT"][0] == ("!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type",
                                 "LOCAL", "-j", "PYCNI-DNAT")
    assert nat6["OUTPUT"][0][:3] == ("!", "-d", "::1/128")
    assert nat4["PYCNI-DNAT"] == [("!", "-i", "br0", "-p", "tcp", "-m", "tcp", "--dport", "8080",
                                   "-m", "comment", "--comment", "pycni:ep1", "-j", "DNAT",
                                   "--to-destination", "10.200.9.7:80")]
    assert nat6["PYCNI-DNAT"] == [("-d", "fd00::1", "!", "-i", "br0", "-p", "udp", "-m", "udp",
                                   "--dport", "5353", "-m", "comment", "--comment", "pycni:ep1",
                                   "-j", "DNAT", "--to-destination", "[fd00::7]:53")]
    calls = len(iptables.calls)
    firewall.publish("ep2", [dnat.PortRule(4, "tcp", "", 8081, "10.200.9.8", 80, "br0")])
    assert len(iptables.calls) == calls + 1  # one iptables run a port, once the chain is there


def test_unpublishing_takes_exactly_the_endpoints_rules(iptables: FakeIptables,
                                                        fresh_dnat: None) -> None:
    firewall.publish("ep1", PORTS)
    firewall.publish("ep2", [dnat.PortRule(4, "tcp", "", 8081, "10.200.9.8", 80, "br0")])
    firewall.unpublish("ep1", PORTS)
    firewall.unpublish("ep1", PORTS)  # DEL semantics
    assert [r[-1] for r in iptables.tables[("iptables", "nat")]["PYCNI-DNAT"]] == [
        "10.200.9.8:80"]
    assert iptables.tables[("ip6tables", "nat")]["PYCNI-DNAT"] == []
    firewall.unpublish("ep2", None)  # by its tag alone
    assert iptables.tables[("iptables", "nat")]["PYCNI-DNAT"] == []


def test_a_refused_port_undoes_the_endpoints_others(iptables: FakeIptables,
                                                    fresh_dnat: None) -> None:
    iptables.refuse[("-t", "nat", "-A", "PYCNI-DNAT", "-d", "fd00::1")] = "no such match"
    with pytest.raises(FirewallError, match="no such match"):
        firewall.publish("ep1", PORTS)
    assert iptables.tables[("iptables", "nat")]["PYCNI-DNAT"] == []


def test_a_flushed_chain_is_made_again_and_rules_restored(iptables: FakeIptables,
                                                          fresh_dnat: None) -> None:
    firewall.publish("ep1", PORTS[:1])
    nat4 = iptables.tables[("iptables", "nat")]
    del nat4["PYCNI-DNAT"]
    nat4["PREROUTING"].clear()
    nat4["OUTPUT"].clear()  # an admin's flush, pycni still running
    firewall.publish("ep2", [dnat.PortRule(4, "tcp", "", 8081, "10.200.9.8", 80, "br0")])
    firewall.restore_published("ep1", PORTS[:1])
    firewall.restore_published("ep1", PORTS[:1])  # only what is missing
    assert len(nat4["PYCNI-DNAT"]) == 2 and nat4["PREROUTING"][0][-1] == "PYCNI-DNAT"


def test_the_last_network_takes_the_empty_dnat_chain(iptables: FakeIptables,
                                                     fresh_dnat: None) -> None:
    firewall.add_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    firewall.publish("ep1", PORTS[:1])
    firewall.unpublish("ep1", PORTS[:1])
    firewall.remove_network(NET, spec("br0", ["10.200.9.0/24"], internal=False))
    assert iptables.own() == {}
    firewall.publish("ep1", PORTS[:1])  # a later network makes it again
    assert len(iptables.tables[("iptables", "nat")]["PYCNI-DNAT"]) == 1
