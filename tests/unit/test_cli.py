"""The ``pycni`` commands' own output: help text, ``ls`` and ``inspect`` with Docker's names.

Docker is replaced by plain functions on :mod:`shim.dockerview` (its one door); pycni's records
are written into ``tmp_path`` as pycni writes them. Nothing here needs root.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shim import dockerview
from shim.cli import DEFAULT_THREADS, main
from shim.dockerview import Container, Names
from shim.settings import Settings
from shim.store import Store
from tests.unit.test_health import CONFIG, EID, MAC, RESULT, stored

pytestmark = pytest.mark.unit

NID = "a" * 64
CID = "c" * 64


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))


#: reST roles and literals (``x``, :func:`x`), Markdown code (`x`): markup a terminal prints as is
MARKUP = re.compile(r"``|:[a-z]+:`|`[^`\s][^`]*`")


@pytest.mark.parametrize("argv", [(), *commands(main)], ids=lambda a: " ".join(a) or "pycni")
def test_help_is_plain_text(argv: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert not MARKUP.search(result.output), result.output


def test_gc_help_names_the_server_without_markup() -> None:
    output = CliRunner().invoke(main, ["gc", "--help"]).output
    assert "Asks the running pycni serve to do it" in output


def test_serve_sizes_its_pool_for_dockers_parallel_calls() -> None:
    output = CliRunner().invoke(main, ["serve", "--help"]).output
    assert f"[default: {DEFAULT_THREADS}]" in output
    assert DEFAULT_THREADS >= 50  # the benchmark's largest number of parallel docker clients


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One zero-config network with one joined endpoint, in a state dir of its own."""
    store = Store(str(tmp_path / "state"))
    stored(store, "networks", {
        "id": NID,
        "request": {"NetworkID": NID, "Options": {}, "IPv4Data": [], "IPv6Data": []},
        "config": CONFIG,
        "mode": "zero-config",
        "ipam": "docker",
    })
    stored(store, "endpoints", {
        "id": EID,
        "network_id": NID,
        "netns": "pycni-" + EID[:12],
        "ifname": "eth0",
        "host_ifname": "pcn" + EID[:12],
        "phase": "joined",
        "config": CONFIG,
        "cni_args": [],
        "capability_args": {},
        "result": RESULT,
        "mac": MAC,
        "addresses": ["10.203.1.5/24"],
    })
    monkeypatch.setenv("PYCNI_STATE_DIR", store.root)
    monkeypatch.setenv("PYCNI_DRIVER_NAME", "pycni:latest")
    return tmp_path


def docker_knows(monkeypatch: pytest.MonkeyPatch, names: Names) -> list[str]:
    asked: list[str] = []

    def fake(driver_name: str = "pycni", timeout: float = 3.0) -> Names:
        asked.append(driver_name)
        return names

    monkeypatch.setattr(dockerview, "names", fake)
    return asked


NAMES = Names({NID: "web-net"}, {EID: Container(CID, "web1")})


def test_ls_shows_the_names_docker_knows(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = docker_knows(monkeypatch, NAMES)
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 0, result.output
    network_line, endpoint_line = result.output.splitlines()[1:]
    assert network_line.startswith(f"{NID[:12]}  web-net ")
    assert endpoint_line.split() == ["└", EID[:12], "web1", "joined", "10.203.1.5/24", MAC]
    assert asked == ["pycni:latest"]  # the driver name of the settings, not a guess


def test_ls_without_docker_shows_ids_alone(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_knows(monkeypatch, Names())
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 0, result.output
    endpoint_line = result.output.splitlines()[2]
    assert endpoint_line.split() == ["└", EID[:12], "-", "joined", "10.203.1.5/24", MAC]


def test_inspect_names_the_network_and_each_endpoints_container(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker_knows(monkeypatch, NAMES)
    for ref in ("web-net", NID[:5]):
        result = CliRunner().invoke(main, ["inspect", ref])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["name"] == "web-net"
        [endpoint] = data["endpoints"]
        assert endpoint["container"] == {"id": CID, "name": "web1"}
    docker_knows(monkeypatch, Names())
    data = json.loads(CliRunner().invoke(main, ["inspect", NID[:5]]).output)
    assert data["name"] == "" and data["endpoints"][0]["container"] is None


def test_check_and_doctor_run_the_plugins_pycni_serve_runs(tmp_path: Path) -> None:
    """pycni serve writes what it runs plugins with; the commands beside it take that unless
    told otherwise (the environment or a flag)."""
    served = Settings(state_dir=str(tmp_path), cni_path=("/opt/sid/cni",), conf_dir="/etc/sid",
                      cache_dir=str(tmp_path / "cache"), plugin_timeout=7.0)
    served.remember()
    found = Settings.from_env({}, served=True, state_dir=str(tmp_path))
    assert (found.cni_path, found.conf_dir, found.cache_dir, found.plugin_timeout) == (
        ("/opt/sid/cni",), "/etc/sid", str(tmp_path / "cache"), 7.0)
    told = Settings.from_env({"CNI_PATH": "/usr/lib/cni"}, served=True, state_dir=str(tmp_path),
                             conf_dir="/etc/mine")
    assert (told.cni_path, told.conf_dir) == (("/usr/lib/cni",), "/etc/mine")
    alone = Settings.from_env({}, served=True, state_dir=str(tmp_path / "never-served"))
    assert alone.cni_path == Settings().cni_path
