"""pycni's one contact with iptables: every command through :data:`runner` (list arguments,
never a shell; ``-w`` for the xtables lock; unit tests put a fake iptables there), and the few
chain operations the rule modules share (:mod:`shim.firewall`, :mod:`shim.dnat`)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

from .errors import FirewallError

#: pycni's iptables chains, one process's check-then-add at a time (the lock table:
#: :mod:`shim.registry`)
lock = threading.Lock()

#: Runs one command line (``iptables``/``ip6tables`` and its arguments) and answers
#: ``(exit status, stdout, stderr)``; raises :class:`FirewallError` if it cannot run at all.
Runner = Callable[[list[str]], tuple[int, str, str]]


def run_subprocess(argv: list[str]) -> tuple[int, str, str]:
    """The real runner: the command as a child process, bounded in time."""
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{' '.join(argv)}: {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr


#: What every iptables command goes through; replaced by a fake in unit tests.
runner: Runner = run_subprocess


def tool(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def call(version: int, *args: str) -> tuple[int, str, str]:
    return runner([tool(version), "-w", "10", *args])


def run(version: int, *args: str, check: bool = True) -> bool:
    status, _out, err = call(version, *args)
    if check and status != 0:
        raise FirewallError(f"{tool(version)} {' '.join(args)}: {err.strip()}")
    return status == 0


def has_chain(version: int, table: str, chain: str) -> bool:
    return run(version, "-t", table, "-n", "-L", chain, check=False)


def ensure_rule(version: int, table: str, chain: str, rule: list[str], *,
                first: bool = False) -> None:
    """Append ``rule`` to ``chain`` (insert it at the top if ``first``) unless it is there
    already."""
    if not run(version, "-t", table, "-C", chain, *rule, check=False):
        run(version, "-t", table, *(("-I", chain, "1") if first else ("-A", chain)), *rule)


def delete_rule(version: int, table: str, chain: str, rule: list[str]) -> None:
    """Delete every copy of ``rule`` from ``chain``; none there is fine."""
    while run(version, "-t", table, "-D", chain, *rule, check=False):
        pass


def ensure_chain(version: int, table: str, chain: str, parent: str, *,
                 below: str | None = None) -> None:
    """Make ``chain`` and its jump from ``parent``: at the top, or right below the jump to
    ``below`` where ``parent`` has one."""
    if not has_chain(version, table, chain):
        run(version, "-t", table, "-N", chain)
    if run(version, "-t", table, "-C", parent, "-j", chain, check=False):
        return
    position = 1
    if below is not None:
        _status, out, _err = call(version, "-t", table, "-S", parent)
        rules = [line for line in out.splitlines() if line.startswith("-A ")]
        position += next((i + 1 for i, line in enumerate(rules)
                          if line == f"-A {parent} -j {below}"), 0)
    run(version, "-t", table, "-I", parent, str(position), "-j", chain)


def drop_chain_if_empty(version: int, table: str, chain: str, parent: str) -> None:
    status, out, _err = call(version, "-t", table, "-S", chain)
    if status != 0:
        return  # no such chain
    if any(line.startswith("-A ") for line in out.splitlines()):
        return
    run(version, "-t", table, "-D", parent, "-j", chain, check=False)
    run(version, "-t", table, "-X", chain, check=False)
