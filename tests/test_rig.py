"""The test rig itself: the engine and test image, the leak audit, the skip-or-fail policy.

If these fail, no other integration or e2e result can be trusted: a leak audit that cannot see a
leaked link or rule would pass every test, and a CI run that skips instead of failing is green
for nothing. Host state made here is named ``pct…``/``PYCNI-T-…``/``pycni-t-…`` and removed by
the test itself; it never carries traffic.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import leaks
from tests.conftest import REPO, docker, run, unmet

if TYPE_CHECKING:
    from docker import DockerClient


def ours(items: list[str], tag: str) -> set[str]:
    """The diff items about what this test made (other items may come from elsewhere)."""
    return {item for item in items if tag in item}


# --- the leak audit, on canned input (no root) ---------------------------------------------------


def snap(**kinds: set[str]) -> leaks.Snapshot:
    return leaks.Snapshot(**{kind: frozenset(items) for kind, items in kinds.items()})


@pytest.mark.unit
def test_diff_lists_what_appeared_and_vanished_separately() -> None:
    before = snap(links={"lo", "eth0", "old0"}, netns={"a"})
    after = snap(links={"lo", "eth0", "new0 [veth]"}, netns={"a", "b"})

    assert leaks.diff(before, after) == ["netns: b", "links: new0 [veth]"]
    assert leaks.vanished(before, after) == ["links: old0"]
    with pytest.raises(AssertionError) as caught:
        leaks.assert_no_leaks(before, after)
    message = str(caught.value)
    left, _, gone = message.partition("disappeared:")
    assert "links: new0 [veth]" in left and "netns: b" in left and "old0" not in left
    assert "links: old0" in gone

    leaks.assert_no_leaks(after, after)  # no change, no complaint


@pytest.mark.unit
def test_ignore_takes_regexes_or_a_predicate() -> None:
    before = snap(chains={"iptables filter FORWARD"})
    after = snap(
        chains={"iptables filter FORWARD", "iptables filter DOCKER-USER", "iptables nat DOCKER"},
        links={"docker0 [bridge]"},
    )
    assert leaks.diff(before, after, [r"^chains: .* DOCKER", r"docker0"]) == []
    assert leaks.diff(before, after, lambda kind, item: kind == "chains") == [
        "links: docker0 [bridge]"
    ]
    leaks.assert_no_leaks(before, after, [r"DOCKER", r"^links: docker0 "])
    with pytest.raises(AssertionError, match="DOCKER-USER"):
        leaks.assert_no_leaks(before, after, [r"nat DOCKER$", r"docker0"])


SAVE_FORWARD = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:CNI-FORWARD - [0:0]
-A FORWARD -j CNI-FORWARD
-A CNI-FORWARD -m comment --comment "x" -j ACCEPT
{extra}COMMIT
"""


@pytest.mark.unit
def test_iptables_rules_are_counted_so_a_duplicate_is_a_leak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = ""

    def fake_run(args: list[str]) -> str:
        if args[0] == "iptables-save" and args[1:] == ["-t", "filter"]:
            return SAVE_FORWARD.format(extra=extra)
        return ""

    monkeypatch.setattr(leaks, "_run", fake_run)
    before = leaks.snapshot(cni_cache_dir="/nonexistent", state_dir="/nonexistent")
    assert "iptables filter CNI-FORWARD" in before.chains
    assert 'iptables filter -A CNI-FORWARD -m comment --comment "x" -j ACCEPT' in before.rules

    extra = '-A CNI-FORWARD -m comment --comment "x" -j ACCEPT\n'  # the same rule once more
    after = leaks.snapshot(cni_cache_dir="/nonexistent", state_dir="/nonexistent")
    assert leaks.diff(before, after) == [
        'rules: iptables filter -A CNI-FORWARD -m comment --comment "x" -j ACCEPT #2'
    ]
    assert leaks.vanished(before, after) == []


@pytest.mark.unit
def test_snapshot_sees_reservations_cache_and_state_files(tmp_path: Path) -> None:
    cache, state = tmp_path / "cni", tmp_path / "pycni"
    net = cache / "networks" / "pycni-rig"
    net.mkdir(parents=True)
    # host-local's bookkeeping, which stays once a network was used: not a reservation
    (net / "lock").write_text("")
    (net / "last_reserved_ip.0").write_text("10.200.0.9")
    before = leaks.snapshot(cni_cache_dir=str(cache), state_dir=str(state))
    assert before.reservations == frozenset() and before.state_files == frozenset()

    (net / "10.200.0.9").write_text("ctr-1\neth0")
    (cache / "results").mkdir()
    (cache / "results" / "pycni-rig-ctr-1-eth0").write_text("{}")
    (state / "endpoints").mkdir(parents=True)
    (state / "endpoints" / "ep1.json").write_text("{}")
    after = leaks.snapshot(cni_cache_dir=str(cache), state_dir=str(state))

    files = ("reservations", "cache_files", "state_files")  # links etc. are the host's: skip
    assert [item for item in leaks.diff(before, after) if item.startswith(files)] == [
        "reservations: pycni-rig/10.200.0.9 (ctr-1 eth0)",
        "cache_files: pycni-rig-ctr-1-eth0",
        "state_files: endpoints/ep1.json",
    ]


# --- the skip-or-fail policy (no root: it runs a pytest that pretends not to be root) -------------

INNER_CONFTEST = """
import os

os.geteuid = lambda: 4242  # pretend not to be root, whoever runs this

from tests.conftest import pytest_runtest_setup  # noqa: E402,F401 - the hook under test


def pytest_configure(config):
    for marker in ("unit", "integration", "e2e"):
        config.addinivalue_line("markers", marker)
"""

INNER_TESTS = """
import pytest

@pytest.mark.unit
def test_unit():
    pass

@pytest.mark.integration
def test_needs_root():
    pass

@pytest.mark.e2e
def test_needs_engine():
    pass
"""


def inner_pytest(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(INNER_CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.unit
def test_missing_root_skips_on_a_developer_machine(tmp_path: Path) -> None:
    proc = inner_pytest(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout, proc.stdout


@pytest.mark.unit
def test_missing_root_fails_under_ci(tmp_path: Path) -> None:
    proc = inner_pytest(tmp_path, ci=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed, 2 errors" in proc.stdout, proc.stdout
    assert "CI must not skip: needs root" in proc.stdout, proc.stdout
    assert "skipped" not in proc.stdout


# --- the leak audit on the real host (root) ------------------------------------------------------


@pytest.fixture
def tag() -> str:
    return secrets.token_hex(4)


@pytest.fixture
def host_link(leak_check: list[str], tag: str) -> Iterator[Callable[[], tuple[set[str], str]]]:
    """Makes ``pct<tag>``: a dummy link, or a veth pair where the kernel has no dummy driver.

    Returns the audit items expected for it and the name to delete; deleted at teardown too.
    """
    name = f"pct{tag}"

    def make() -> tuple[set[str], str]:
        if run("ip", "link", "add", name, "type", "dummy", check=False).returncode == 0:
            return {f"links: {name} [dummy]"}, name
        run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
        return {f"links: {name} [veth]", f"links: {name}p [veth]"}, name

    yield make
    run("ip", "link", "delete", name, check=False)  # a veth's peer goes with it


@pytest.mark.integration
def test_leak_audit_sees_a_link(host_link: Callable[[], tuple[set[str], str]], tag: str) -> None:
    before = leaks.snapshot()
    expected, name = host_link()
    after = leaks.snapshot()
    assert ours(leaks.diff(before, after), tag) == expected
    with pytest.raises(AssertionError, match=f"left behind:(.|\n)*{name}"):
        leaks.assert_no_leaks(before, after)

    run("ip", "link", "delete", name)
    assert ours(leaks.diff(before, leaks.snapshot()), tag) == set()
    # and, seen the other way round, the audit reports the removal as "disappeared"
    assert ours(leaks.vanished(after, leaks.snapshot()), tag) == expected


@pytest.mark.integration
def test_leak_audit_sees_a_netns(leak_check: list[str], tag: str) -> None:
    name = f"pycni-t-{tag}"
    before = leaks.snapshot()
    run("ip", "netns", "add", name)
    try:
        assert ours(leaks.diff(before, leaks.snapshot()), tag) == {f"netns: {name}"}
    finally:
        run("ip", "netns", "delete", name)
    assert ours(leaks.diff(before, leaks.snapshot()), tag) == set()


@pytest.mark.integration
@pytest.mark.parametrize("family", ["iptables", "ip6tables"])
def test_leak_audit_sees_a_chain_and_a_rule(leak_check: list[str], tag: str, family: str) -> None:
    chain = f"PYCNI-T-{tag.upper()}"
    # A chain nothing jumps to, with an address-free rule: it can never match real traffic.
    rule = ["-m", "comment", "--comment", f"pycni-rig-{tag}", "-j", "RETURN"]
    # iptables-save quotes a comment only when it needs to; this one doesn't
    rule_item = f"rules: {family} filter -A {chain} -m comment --comment pycni-rig-{tag} -j RETURN"
    if run(f"{family}-save", "-t", "filter", check=False).returncode != 0:
        unmet(f"{family}-save fails here (a kernel without IPv6?)")
    before = leaks.snapshot()
    run(family, "-w", "10", "-t", "filter", "-N", chain)
    try:
        with_chain = leaks.snapshot()
        assert ours(leaks.diff(before, with_chain), tag.upper()) == {
            f"chains: {family} filter {chain}"
        }
        # A rule added to a chain that already existed is a leak too, and so is a duplicate.
        run(family, "-w", "10", "-t", "filter", "-A", chain, *rule)
        one_rule = leaks.snapshot()
        assert ours(leaks.diff(with_chain, one_rule), tag) == {rule_item}
        run(family, "-w", "10", "-t", "filter", "-A", chain, *rule)
        assert ours(leaks.diff(one_rule, leaks.snapshot()), tag) == {f"{rule_item} #2"}
    finally:
        run(family, "-w", "10", "-t", "filter", "-F", chain, check=False)
        run(family, "-w", "10", "-t", "filter", "-X", chain, check=False)
    assert ours(leaks.diff(before, leaks.snapshot()), tag.upper()) == set()


@pytest.mark.integration
def test_netns_fixture_makes_named_namespaces(netns: Callable[[], str]) -> None:
    first, second = netns(), netns()
    assert first != second
    for path in (first, second):
        name = os.path.basename(path)
        assert path == f"/run/netns/{name}" and name.startswith("pycni-t-")
        assert os.path.exists(path)
        # a namespace of its own: only loopback inside
        links = run("ip", "-n", name, "-o", "link", "show").stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]


# --- the engine and the test image (root, dockerd) -----------------------------------------------


@pytest.mark.e2e
def test_engine_runs_the_busybox_image(
    docker_engine: DockerClient, test_image: str, leak_check: list[str]
) -> None:
    assert docker_engine.ping()
    image = docker_engine.images.get(test_image)
    assert image.attrs["Config"]["Env"] == ["PATH=/bin"]

    proc = docker("run", "--rm", "--network", "none", test_image, "sh", "-c", "ip addr; echo ok")
    lines = proc.stdout.splitlines()
    assert lines[-1] == "ok", proc.stdout
    # --network none: loopback only, and the image's busybox `ip` works
    assert any("inet 127.0.0.1/8" in line for line in lines), proc.stdout
    assert not any("eth0" in line for line in lines), proc.stdout


@pytest.mark.e2e
def test_engine_script_is_fast_and_leaves_a_running_engine_alone(
    docker_engine: DockerClient,
) -> None:
    pid = Path("/var/run/docker.pid").read_text().strip()
    started = time.monotonic()
    proc = run("bash", str(REPO / "scripts" / "engine.sh"), timeout=60)
    elapsed = time.monotonic() - started
    assert "starting dockerd" not in proc.stdout and "importing" not in proc.stdout, proc.stdout
    assert elapsed < 10, f"engine.sh took {elapsed:.1f}s with the engine already up"
    assert Path("/var/run/docker.pid").read_text().strip() == pid
    assert docker_engine.ping()
