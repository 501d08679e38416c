"""Fixtures shared by every tier.

* unit: no root, no binaries; fakes only.
* integration: real CNI plugins in namespaces the test makes (root, /usr/lib/cni).
* e2e: a real dockerd, the docker CLI and a real ``pycni serve`` (root, engine).

Integration and e2e tests skip when their prerequisites are missing on a developer machine, but
fail under CI (``CI=true``): a CI run must never go green by skipping.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests import leaks

if TYPE_CHECKING:
    from docker import DockerClient

REPO = Path(__file__).resolve().parent.parent
#: the CNI plugins the integration and e2e tiers run: Debian 12's 1.1.1 unless told otherwise
#: (``PYCNI_TEST_CNI_BIN``: sid's 1.9.1, unpacked by scripts/sid.sh)
CNI_BIN = os.environ.get("PYCNI_TEST_CNI_BIN") or "/usr/lib/cni"
#: whether those plugins speak CNI 1.1.0 (STATUS, GC): 1.6 and later do, Debian 12's 1.1.1 doesn't
PLUGINS_SPEAK_1_1 = os.path.exists(os.path.join(CNI_BIN, "dummy"))  # dummy arrived with 1.6
CNI_PATH = f"/opt/cni/bin:{CNI_BIN}"
TEST_IMAGE = "pycni-test:busybox"


def _missing_prerequisite(item: pytest.Item) -> str | None:
    if item.get_closest_marker("integration") or item.get_closest_marker("e2e"):
        if os.geteuid() != 0:
            return "needs root"
        if not os.access(os.path.join(CNI_BIN, "bridge"), os.X_OK):
            return f"needs the CNI reference plugins in {CNI_BIN} (make deps)"
        if shutil.which("ip") is None:
            return "needs iproute2 (make deps)"
    if item.get_closest_marker("e2e") and shutil.which("dockerd") is None:
        return "needs a Docker engine (make deps)"
    return None


def unmet(reason: str) -> NoReturn:
    """A prerequisite is missing: skip on a developer machine, fail under CI (``CI=true``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must not skip: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    """For code paths outside the integration/e2e markers that still need root."""
    if os.geteuid() != 0:
        unmet("needs root")


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A hook rather than an autouse fixture: it runs before any fixture of the test, including
    # session-scoped ones such as docker_engine, which would otherwise be set up first.
    reason = _missing_prerequisite(item)
    if reason:
        unmet(reason)


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command (list form, never a shell) and capture its text output."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


@pytest.fixture
def cni_path() -> str:
    return CNI_PATH


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """A factory of fresh network namespaces (``/run/netns/pycni-t-…``), all removed after."""
    made: list[str] = []

    def make() -> str:
        name = f"pycni-t-{secrets.token_hex(4)}"
        run("ip", "netns", "add", name)
        made.append(name)
        return f"/run/netns/{name}"

    yield make
    for name in made:
        run("ip", "netns", "delete", name, check=False)


#: One priming pass per IP family: its iptables tool, a subnet and a bridge of its own.
PRIMING_PASSES = (
    ("iptables", "10.203.255.0/30", "pycni-prime0"),
    ("ip6tables", "fd00:200:ff::/64", "pycni-prime6"),
)


def _prime(subnet: str, bridge: str) -> None:
    """One ADD and DEL of bridge + portmap + firewall on ``subnet``, in a namespace of its own."""
    from shim.cni import CNI, RuntimeConf
    from shim.cni.config import conflist_from_dict

    name = f"pycni-prime-{secrets.token_hex(3)}"
    work = Path(f"/tmp/{name}")
    work.mkdir()
    run("ip", "netns", "add", name)
    try:
        conf = conflist_from_dict(
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": bridge,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(work / "ipam"),
                            "ranges": [[{"subnet": subnet}]],
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                    {"type": "firewall"},
                ],
            }
        )
        cni = CNI(CNI_PATH.split(":"), cache_dir=str(work / "cache"))
        rt = RuntimeConf(
            container_id=name,
            netns=f"/run/netns/{name}",
            capability_args={
                "portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "tcp"}]
            },
        )
        cni.add(conf, rt)
        cni.delete(conf, rt)
    finally:
        run("ip", "netns", "delete", name, check=False)
        run("ip", "link", "delete", bridge, check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cni_chains() -> None:
    """Create what portmap and firewall share between all containers, in both IP families.

    The first ADD of portmap in a family creates nat CNI-HOSTPORT-{DNAT,MASQ,SETMARK} with jumps
    from PREROUTING/OUTPUT/POSTROUTING, and the first ADD of firewall creates filter CNI-FORWARD
    and CNI-ADMIN with a jump from FORWARD. Both plugins keep them forever, by design, so they
    are made once here, for IPv4 and IPv6 alike, before any leak snapshot
    (:data:`tests.leaks.SHARED_CHAINS`); everything per container is still audited. Both passes run every session, chains there or
    not: the plugins also put back a jump someone removed. IPv6's is skipped on a kernel without
    IPv6.
    """
    if os.geteuid() != 0 or not os.access(f"{CNI_BIN}/portmap", os.X_OK):
        return
    with leaks.exclusive():  # the passes make links and namespaces another run's audit would see
        for family, subnet, bridge in PRIMING_PASSES:
            if family == "ip6tables" and not os.path.exists("/proc/net/if_inet6"):
                continue
            _prime(subnet, bridge)
            missing = leaks.missing_shared_chains([family])
            assert not missing, (
                f"priming {family} did not make {', '.join(missing)}: the plugins no longer "
                "create what tests/leaks.py SHARED_CHAINS lists; update the list"
            )


@pytest.fixture
def leak_check(shared_cni_chains: None, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Snapshot the host before the test and assert nothing leaked after it.

    Yields a list the test may append ignore patterns to (regexes over ``"<kind>: <item>"``).
    """
    state_dir = getattr(request, "param", None) or os.environ.get("PYCNI_STATE_DIR", "/var/lib/pycni")
    ignore: list[str] = []
    with leaks.exclusive():  # other pytest runs on this host would show up as leaks
        before = leaks.snapshot(state_dir=state_dir)
        yield ignore
        after = leaks.snapshot(state_dir=state_dir)
    leaks.assert_no_leaks(before, after, ignore)


# --- e2e -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> DockerClient:
    """The engine, started by scripts/engine.sh if needed (it also imports the test image)."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        unmet("needs root and a Docker engine (make deps)")
    run("bash", str(REPO / "scripts" / "engine.sh"), timeout=180)
    import docker  # here, not at the top: the module's own ``docker`` is the CLI helper

    client: DockerClient = docker.from_env()
    return client


@pytest.fixture
def test_image() -> str:
    return TEST_IMAGE


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real docker CLI."""
    return run("docker", *args, check=check, timeout=timeout)


def docker_json(*args: str) -> object:
    return json.loads(docker(*args).stdout)


def python() -> str:
    return sys.executable
