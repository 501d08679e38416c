"""A leak audit: what a test left on the host that wasn't there before it.

A snapshot records everything a CNI attachment can leave behind — host-local reservations, network
namespaces, links, iptables chains and rules (v4 and v6), libcni cache files and pycni's own
records — and :func:`assert_no_leaks` compares two of them. A test that tears down cleanly leaves
the host exactly as it found it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")


@dataclass(frozen=True)
class Snapshot:
    reservations: frozenset[str] = field(default_factory=frozenset)
    netns: frozenset[str] = field(default_factory=frozenset)
    links: frozenset[str] = field(default_factory=frozenset)
    chains: frozenset[str] = field(default_factory=frozenset)
    rules: frozenset[str] = field(default_factory=frozenset)
    cache_files: frozenset[str] = field(default_factory=frozenset)
    state_files: frozenset[str] = field(default_factory=frozenset)


def _run(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    return proc.stdout if proc.returncode == 0 else ""


def _files(root: str) -> set[str]:
    found: set[str] = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _reservations(cache_dir: str) -> set[str]:
    """host-local's reserved addresses (``networks/<net>/<ip>`` holding ``<id>\\n<ifname>``)."""
    root = os.path.join(cache_dir, "networks")
    found = set()
    for rel in _files(root):
        base = os.path.basename(rel)
        # "lock" and the allocation cursor "last_reserved_ip.N" are bookkeeping, not reservations
        if base == "lock" or base.startswith("last_reserved_ip"):
            continue
        try:
            with open(os.path.join(root, rel)) as f:
                owner = f.read().strip().replace("\n", " ")
        except OSError:
            owner = "?"
        found.add(f"{rel} ({owner})")
    return found


def _iptables() -> tuple[set[str], set[str]]:
    chains: set[str] = set()
    rules: set[str] = set()
    for tool in ("iptables-save", "ip6tables-save"):
        for table in IPTABLES_TABLES:
            for line in _run([tool, "-t", table]).splitlines():
                if line.startswith(":"):
                    chains.add(f"{tool[:-5]} {table} {line[1:].split()[0]}")
                elif line.startswith("-A "):
                    rules.add(f"{tool[:-5]} {table} {line}")
    return chains, rules


def snapshot(cache_dir: str = "/var/lib/cni", state_dir: str = "/var/lib/pycni") -> Snapshot:
    chains, rules = _iptables()
    links = set()
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        # "12: name@peer: <...>" → name
        match = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if match:
            links.add(match.group(1))
    try:
        netns = set(os.listdir("/run/netns"))
    except FileNotFoundError:
        netns = set()
    return Snapshot(
        reservations=frozenset(_reservations(cache_dir)),
        netns=frozenset(netns),
        links=frozenset(links),
        chains=frozenset(chains),
        rules=frozenset(rules),
        cache_files=frozenset(_files(os.path.join(cache_dir, "results"))),
        state_files=frozenset(_files(state_dir)),
    )


Ignore = Callable[[str, str], bool]


def diff(
    before: Snapshot, after: Snapshot, ignore: Iterable[str] | Ignore = ()
) -> tuple[list[str], list[str]]:
    """``(leaked, vanished)``: descriptions of what appeared and what disappeared.

    ``ignore`` is a list of regular expressions matched against ``"<kind>: <item>"``, or a
    predicate ``(kind, item) -> bool``, for things a test expects to change.
    """
    if callable(ignore):
        skip = ignore
    else:
        patterns = [re.compile(p) for p in ignore]

        def skip(kind: str, item: str) -> bool:
            return any(p.search(f"{kind}: {item}") for p in patterns)

    leaked: list[str] = []
    vanished: list[str] = []
    for kind in before.__dataclass_fields__:
        old: frozenset[str] = getattr(before, kind)
        new: frozenset[str] = getattr(after, kind)
        leaked += [f"{kind}: {item}" for item in sorted(new - old) if not skip(kind, item)]
        vanished += [f"{kind}: {item}" for item in sorted(old - new) if not skip(kind, item)]
    return leaked, vanished


def assert_no_leaks(
    before: Snapshot, after: Snapshot, ignore: Iterable[str] | Ignore = ()
) -> None:
    leaked, vanished = diff(before, after, ignore)
    if leaked or vanished:
        lines = []
        if leaked:
            lines += ["left behind:"] + [f"  {x}" for x in leaked]
        if vanished:
            lines += ["disappeared:"] + [f"  {x}" for x in vanished]
        raise AssertionError("host state changed\n" + "\n".join(lines))
