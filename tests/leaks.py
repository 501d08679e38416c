"""A leak audit: what a test left on the host that wasn't there before it.

A snapshot records everything a CNI attachment can leave behind — host-local reservations, network
namespaces, links, iptables chains and rules (v4 and v6), libcni cache files and pycni's own
records, and an overlay's VTEPs, their neighbour/fdb entries and routes and its etcd keys — and :func:`assert_no_leaks` compares two of them. A test that tears down cleanly leaves
the host exactly as it found it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
FAMILIES = ("iptables", "ip6tables")
#: What CNI plugins create on first use and keep forever, by design, in each family they are
#: used with: portmap's nat CNI-HOSTPORT-{DNAT,SETMARK,MASQ} (with their jumps from PREROUTING,
#: OUTPUT and POSTROUTING and their fixed rules) and firewall's filter CNI-FORWARD and CNI-ADMIN
#: (with the jumps FORWARD → CNI-FORWARD → CNI-ADMIN). A snapshot taken before the first use
#: in a family would blame all of that on whichever test happened to use it first, so
#: tests/conftest.py ``shared_cni_chains`` makes it once per session, in both families, before
#: any snapshot. (The tables need no priming: ``<family>-save -t TABLE`` lists a table's
#: built-in chains even where iptables-nft has not made the table yet.)
SHARED_CHAINS = {
    "nat": ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"),
    "filter": ("CNI-FORWARD", "CNI-ADMIN"),
}
#: Held from a test's first snapshot to its last, by every pytest process on the machine.
AUDIT_LOCK = "/run/lock/pycni-leak-audit.lock"
SERVED = "served.json"  # shim.settings.SERVED


@contextlib.contextmanager
def exclusive(timeout: float = 900.0, path: str = AUDIT_LOCK) -> Iterator[None]:
    """One audited test at a time on this host, across pytest processes.

    The audit compares host-wide state, so two test runs at once (two engineers, or the
    integration and e2e tiers in parallel) would see each other's links and rules as leaks. The
    wait is bounded: after ``timeout`` seconds the test fails instead of hanging.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} held by another test run for {timeout:g}s")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Snapshot:
    """Host state, one set of human-readable items per kind (the field names are the kinds)."""

    #: ``<net>/<ip> (<container id> <ifname>)`` for every host-local reservation
    reservations: frozenset[str] = field(default_factory=frozenset)
    #: named network namespaces
    netns: frozenset[str] = field(default_factory=frozenset)
    #: host links: ``name``, or ``name [kind]`` for the kinds CNI plugins make
    links: frozenset[str] = field(default_factory=frozenset)
    #: ``iptables|ip6tables <table> <chain>``
    chains: frozenset[str] = field(default_factory=frozenset)
    #: ``iptables|ip6tables <table> -A <chain> ...``; a rule present n times appears as n items
    #: (the 2nd onwards suffixed ``#2``, ``#3``...) so a duplicated rule counts as a leak too
    rules: frozenset[str] = field(default_factory=frozenset)
    #: libcni result cache files, relative to ``<cache>/results``
    cache_files: frozenset[str] = field(default_factory=frozenset)
    #: every file under pycni's state dir, relative to it
    state_files: frozenset[str] = field(default_factory=frozenset)
    #: what an overlay's VTEP programs per peer: permanent neighbour entries, fdb entries with
    #: a remote (``dst``), ``onlink`` routes
    overlay_entries: frozenset[str] = field(default_factory=frozenset)
    #: keys under ``/pycni/`` in the etcd ``PYCNI_ETCD`` names (none without it)
    etcd_keys: frozenset[str] = field(default_factory=frozenset)
    #: host interfaces whose ``net.ipv4.conf.<if>.route_localnet`` is 1 (portmap's snat sets
    #: it; it opens the host's 127.0.0.0/8 to what arrives there)
    localnet: frozenset[str] = field(default_factory=frozenset)


#: Link kinds whose names are also listed by kind (``ip link show type <kind>``).
LINK_KINDS = ("veth", "bridge", "macvlan", "ipvlan", "dummy", "vxlan")


def _run(args: list[str]) -> str:
    """A command's stdout, or "" if it is missing or fails (the same on both snapshots)."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError:
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def _files(root: str) -> set[str]:
    found: set[str] = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _reservations(cni_cache_dir: str) -> set[str]:
    """host-local's reserved addresses (``networks/<net>/<ip>`` holding ``<id>\\n<ifname>``)."""
    root = os.path.join(cni_cache_dir, "networks")
    found = set()
    for rel in _files(root):
        base = os.path.basename(rel)
        # "lock" and the allocation cursor "last_reserved_ip.N" are bookkeeping that host-local
        # leaves in place by design once a network was used; they are not reservations.
        if base == "lock" or base.startswith("last_reserved_ip"):
            continue
        try:
            with open(os.path.join(root, rel)) as f:
                owner = f.read().strip().replace("\n", " ")
        except OSError:
            owner = "?"
        found.add(f"{rel} ({owner})")
    return found


def _netns() -> set[str]:
    """Names from ``ip netns list`` ("name (id: 3)") and the entries of /run/netns."""
    names = {line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()}
    try:
        names |= set(os.listdir("/run/netns"))
    except FileNotFoundError:
        pass
    return names


def _link_names(output: str) -> set[str]:
    names = set()
    for line in output.splitlines():
        # "12: name@peer: <...>" → name
        match = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if match:
            names.add(match.group(1))
    return names


def _links() -> set[str]:
    names = _link_names(_run(["ip", "-o", "link", "show"]))
    kinds: dict[str, str] = {}
    for kind in LINK_KINDS:
        for name in _link_names(_run(["ip", "-o", "link", "show", "type", kind])):
            kinds[name] = kind
    # A typed link always shows in the plain listing too; the union is belt and braces.
    return {f"{n} [{kinds[n]}]" if n in kinds else n for n in names | set(kinds)}


def _iptables() -> tuple[set[str], set[str]]:
    chains: set[str] = set()
    rules: set[str] = set()
    for family in FAMILIES:
        tool = f"{family}-save"
        for table in IPTABLES_TABLES:
            seen: dict[str, int] = {}
            for line in _run([tool, "-t", table]).splitlines():
                if line.startswith(":"):
                    chains.add(f"{family} {table} {line[1:].split()[0]}")
                elif line.startswith("-A "):
                    rule = f"{family} {table} {line}"
                    seen[rule] = seen.get(rule, 0) + 1
                    rules.add(rule if seen[rule] == 1 else f"{rule} #{seen[rule]}")
    return chains, rules


def _overlay_entries() -> set[str]:
    found = {f"neigh {line.strip()}" for line in
             _run(["ip", "-4", "neigh", "show", "nud", "permanent"]).splitlines() if line.strip()}
    found |= {f"fdb {line.strip()}" for line in _run(["bridge", "fdb", "show"]).splitlines()
              if " dst " in line}
    found |= {f"route {line.strip()}" for line in _run(["ip", "-4", "route", "show"]).splitlines()
              if "onlink" in line}
    return found


def _localnet(root: str = "/proc/sys/net/ipv4/conf") -> set[str]:
    found = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(root):
            try:
                with open(os.path.join(root, name, "route_localnet")) as f:
                    if f.read().strip() == "1":
                        found.add(name)
            except OSError:
                continue
    return found


def _etcd_keys() -> set[str]:
    url = os.environ.get("PYCNI_ETCD")
    if not url:
        return set()
    from shim.errors import StoreUnavailable
    from shim.overlay.store import Endpoint, Etcd

    try:
        return set(Etcd(Endpoint(url), timeout=5).get_prefix("/pycni/"))
    except StoreUnavailable as exc:
        return {f"<etcd unreachable: {exc}>"}


def snapshot(cni_cache_dir: str = "/var/lib/cni", state_dir: str = "/var/lib/pycni") -> Snapshot:
    """Record the host's CNI-relevant state now.

    Without root the iptables part is empty (on both snapshots alike).
    """
    chains, rules = _iptables()
    return Snapshot(
        reservations=frozenset(_reservations(cni_cache_dir)),
        netns=frozenset(_netns()),
        links=frozenset(_links()),
        chains=frozenset(chains),
        rules=frozenset(rules),
        cache_files=frozenset(_files(os.path.join(cni_cache_dir, "results"))),
        # served.json is what a pycni serve runs with (written at every start), not state
        state_files=frozenset(f for f in _files(state_dir) if f != SERVED),
        overlay_entries=frozenset(_overlay_entries()),
        etcd_keys=frozenset(_etcd_keys()),
        localnet=frozenset(_localnet()),
    )


def shared_chains(families: Iterable[str] = FAMILIES) -> set[str]:
    """The :data:`SHARED_CHAINS` of ``families``, as :attr:`Snapshot.chains` items."""
    return {
        f"{family} {table} {chain}"
        for family in families
        for table, chains in SHARED_CHAINS.items()
        for chain in chains
    }


def missing_shared_chains(families: Iterable[str] = FAMILIES) -> list[str]:
    """Which of the :data:`SHARED_CHAINS` of ``families`` the host does not have now."""
    chains, _rules = _iptables()
    return sorted(shared_chains(families) - chains)


#: ``(kind, item) -> True`` for an expected change, e.g. ``("chains", "iptables nat DOCKER")``
IgnorePredicate = Callable[[str, str], bool]
#: Regular expressions searched in ``"<kind>: <item>"``, or a predicate.
Ignore = Iterable[str] | IgnorePredicate


def _skipper(ignore: Ignore) -> IgnorePredicate:
    if callable(ignore):
        return ignore
    patterns = [re.compile(p) for p in ignore]

    def skip(kind: str, item: str) -> bool:
        return any(p.search(f"{kind}: {item}") for p in patterns)

    return skip


def _changes(old: Snapshot, new: Snapshot, ignore: Ignore) -> list[str]:
    """``"<kind>: <item>"`` for every item in ``new`` but not in ``old``, sorted by kind."""
    skip = _skipper(ignore)
    found: list[str] = []
    for kind in fields(Snapshot):
        appeared: frozenset[str] = getattr(new, kind.name) - getattr(old, kind.name)
        found += [f"{kind.name}: {item}" for item in sorted(appeared) if not skip(kind.name, item)]
    return found


def diff(before: Snapshot, after: Snapshot, ignore: Ignore = ()) -> list[str]:
    """What leaked: every item in ``after`` that was not in ``before``, as ``"<kind>: <item>"``.

    ``ignore`` is a list of regular expressions searched in ``"<kind>: <item>"``, or a predicate
    ``(kind, item) -> bool``, for things a test expects to change (``r"^chains: .* DOCKER"``).
    """
    return _changes(before, after, ignore)


def vanished(before: Snapshot, after: Snapshot, ignore: Ignore = ()) -> list[str]:
    """What disappeared: items of ``before`` missing from ``after`` (removed by someone else)."""
    return _changes(after, before, ignore)


def assert_no_leaks(before: Snapshot, after: Snapshot, ignore: Ignore = ()) -> None:
    """Raise AssertionError listing what was left behind and, separately, what disappeared."""
    leaked, gone = diff(before, after, ignore), vanished(before, after, ignore)
    if leaked or gone:
        lines = []
        if leaked:
            lines += ["left behind:"] + [f"  {x}" for x in leaked]
        if gone:
            lines += ["disappeared:"] + [f"  {x}" for x in gone]
        raise AssertionError("host state changed\n" + "\n".join(lines))
