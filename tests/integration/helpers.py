"""Helpers for the integration tests: a recording executor, pings, iptables and netns probes.

Everything here only talks to namespaces and links the tests create; pings are bounded
(``-c1 -W2``, a few attempts) and never leave the machine: the network safety rule.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shim.cni.invoke import RawExec

PING_ATTEMPTS = 3


@dataclass
class Invocation:
    plugin: str
    command: str
    stdin: dict[str, Any]
    #: what the plugin printed, if it succeeded
    stdout: bytes | None = None


@dataclass
class RecordingExec(RawExec):
    """Runs the real plugins (it *is* :class:`RawExec`) and remembers what each was sent.

    This is the executor seam of :class:`shim.cni.CNI` used for observation only: the plugins,
    their output and their errors are real.
    """

    calls: list[Invocation] = field(default_factory=list)

    def exec_plugin(
        self, plugin_path: str, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> bytes:
        call = Invocation(
            os.path.basename(plugin_path), env.get("CNI_COMMAND", ""), json.loads(stdin)
        )
        self.calls.append(call)
        call.stdout = super().exec_plugin(plugin_path, stdin, env, timeout)
        return call.stdout

    def sent(self, plugin: str, command: str) -> list[dict[str, Any]]:
        """The stdin configs ``plugin`` got for ``command``, in order."""
        return [c.stdin for c in self.calls if c.plugin == plugin and c.command == command]

    def answered(self, plugin: str, command: str) -> list[Any]:
        """What ``plugin`` printed for ``command``, parsed, for the calls that succeeded."""
        return [
            json.loads(c.stdout)
            for c in self.calls
            if c.plugin == plugin and c.command == command and c.stdout
        ]


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list, no shell) and capture its text output."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def ns_name(netns_path: str) -> str:
    return os.path.basename(netns_path)


def ping(netns_path: str, address: str) -> bool:
    """One echo from the namespace to ``address``; a few bounded attempts (ARP, port state)."""
    command = ["ip", "netns", "exec", ns_name(netns_path), "busybox", "ping", "-c1", "-W2", address]
    for attempt in range(PING_ATTEMPTS):
        if sh(*command, check=False).returncode == 0:
            return True
        if attempt + 1 < PING_ATTEMPTS:
            time.sleep(0.5)
    return False


def links_in(netns_path: str) -> set[str]:
    """Link names inside a namespace (``eth0``, ``lo``, …)."""
    out = sh("ip", "-n", ns_name(netns_path), "-o", "link", "show").stdout
    names = set()
    for line in out.splitlines():
        # "2: eth0@if12: <...>" → eth0
        names.add(line.split(":")[1].strip().split("@")[0])
    return names


def addresses_in(netns_path: str, ifname: str = "eth0") -> list[str]:
    out = sh("ip", "-n", ns_name(netns_path), "-j", "addr", "show", "dev", ifname).stdout
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out)
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]


def iptables_rules(table: str, chain: str = "") -> list[str]:
    """``iptables -t TABLE -S [CHAIN]``; empty if the chain does not exist."""
    args = ["iptables", "-w", "-t", table, "-S"] + ([chain] if chain else [])
    proc = sh(*args, check=False)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def chain_exists(table: str, chain: str) -> bool:
    return sh("iptables", "-w", "-t", table, "-S", chain, check=False).returncode == 0


def comment_for(network: str, container_id: str) -> str:
    """The comment the reference plugins tag per-container rules with (utils.FormatComment)."""
    return f'name: "{network}" id: "{container_id}"'


def rule_comment(rule: str) -> str:
    """The ``--comment`` of an ``iptables -S`` line (which is shell-quoted), or ``""``."""
    words = shlex.split(rule)
    for n, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[n + 1]
    return ""


def rules_tagged(table: str, chain: str, comment: str) -> list[str]:
    """The rules of ``table``/``chain`` whose comment is exactly ``comment``."""
    return [r for r in iptables_rules(table, chain) if rule_comment(r) == comment]


def delete_rule(table: str, rule: str) -> None:
    """Delete an ``iptables -S`` line (``-A CHAIN …``) from ``table``."""
    words = shlex.split(rule)
    assert words[0] == "-A", rule
    sh("iptables", "-w", "-t", table, "-D", *words[1:])


def reservations(cni_root: Path) -> list[str]:
    """host-local reservations under ``<cni_root>/networks`` (not its lock or cursor files)."""
    root = cni_root / "networks"
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != "lock" and not p.name.startswith("last_reserved_ip")
    )


def cache_files(cni_root: Path) -> list[str]:
    results = cni_root / "results"
    if not results.exists():
        return []
    return sorted(p.name for p in results.iterdir())


def assert_private_dirs_clean(cni_root: Path) -> None:
    """No host-local reservation and no libcni cache record is left in the test's own dirs."""
    assert reservations(cni_root) == [], "host-local reservations left behind"
    assert cache_files(cni_root) == [], "CNI cache records left behind"


@dataclass
class FakePlugin:
    """The test's own CNI 1.1.0 plugin (``fake_cni110.py``) installed in a private CNI_PATH dir."""

    name: str
    bin_dir: Path

    @property
    def log(self) -> Path:
        return self.bin_dir / f"{self.name}.log"

    @property
    def status_flag(self) -> Path:
        return self.bin_dir / f"{self.name}.status-fail"

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in entries if command is None or e["command"] == command]
