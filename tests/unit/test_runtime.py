"""The runtime owner of pycni serve (:class:`shim.server.Runtime`): built without touching the
host, started in order, stopped in reverse."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from shim.server import Runtime
from shim.settings import Settings

pytestmark = pytest.mark.unit


class Part:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __getattr__(self, verb: str) -> Any:
        if verb.startswith("_"):
            raise AttributeError(verb)
        return lambda *args, **kwargs: self.log.append(f"{self.name}.{verb}")


class Server:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.task_dispatcher = Part("requests", log)

    def close(self) -> None:
        self.log.append("socket.close")

    def run(self) -> None:
        self.log.append("socket.serve")


def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=str(tmp_path / "state"), socket_path=str(tmp_path / "p.sock"),
                    cache_dir=str(tmp_path / "cache"), conf_dir=str(tmp_path / "conf"))


def test_building_touches_nothing(tmp_path: Path) -> None:
    runtime = Runtime.build(settings(tmp_path), watch=True)
    assert runtime.controller is not None and runtime.overlays is None
    assert list(tmp_path.iterdir()) == []  # no state dir, no socket, no cache
    assert runtime.driver.networks == {}  # records are read at start, not at build


def test_start_in_order_stop_in_reverse_serving_first(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    runtime = Runtime(settings(tmp_path), driver=Part("driver", log),  # type: ignore[arg-type]
                      overlays=Part("overlays", log),  # type: ignore[arg-type]
                      reconciler=Part("reconciler", log),  # type: ignore[arg-type]
                      reviver=Part("reviver", log), controller=None)  # type: ignore[arg-type]
    def listen() -> Server:
        log.append("socket.listen")
        return Server(log)

    monkeypatch.setattr(runtime, "_listen", listen)
    with contextlib.ExitStack() as stack:
        runtime.start(stack)
        runtime.serve()
        log.append("SIGTERM")
    assert log == [
        "overlays.load", "driver.restore", "socket.listen", "reconciler.start", "reviver.start",
        "overlays.start", "socket.serve", "SIGTERM",
        # serving stops first: the socket goes, running requests finish
        "socket.close", "requests.shutdown",
        "overlays.stop", "reviver.stop", "reconciler.stop", "driver.close",
    ]


def test_a_part_that_fails_to_start_stops_what_started(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []

    class Failing(Part):
        def start(self) -> None:
            raise RuntimeError("no thread for you")

    runtime = Runtime(settings(tmp_path), driver=Part("driver", log),  # type: ignore[arg-type]
                      overlays=None, reconciler=Part("reconciler", log),  # type: ignore[arg-type]
                      reviver=Failing("reviver", log), controller=None)  # type: ignore[arg-type]
    monkeypatch.setattr(runtime, "_listen", lambda: Server(log))
    with pytest.raises(RuntimeError), contextlib.ExitStack() as stack:
        runtime.start(stack)
    assert log == ["driver.restore", "reconciler.start", "socket.close", "requests.shutdown",
                   "reconciler.stop", "driver.close"]


def test_serve_without_etcd_refuses_a_state_with_overlays_naming_them(tmp_path: Path) -> None:
    from shim.errors import ConfigError
    from shim.overlay.leases import Definition
    from shim.overlay.manager import KIND, Joined
    from shim.store import Store

    joined = Joined("n" * 64, "ov-shop", Definition(IPv4Network("10.200.0.0/16"), 24, 7, 1450),
                    IPv4Network("10.200.1.0/24"), 1, "192.0.2.1", "02:00:00:00:00:01")
    Store(str(tmp_path / "state")).save(KIND, joined.network_id, joined.to_json())
    with contextlib.ExitStack() as stack, pytest.raises(ConfigError) as caught:
        Runtime.build(settings(tmp_path)).start(stack)
    assert "overlay network(s) ov-shop" in str(caught.value)
    assert "--etcd URL, or with --without-etcd" in str(caught.value)
    assert not (tmp_path / "p.sock").exists()  # nothing served
    # told to go on, it serves the other networks
    log: list[str] = []
    runtime = Runtime(settings(tmp_path), driver=Part("driver", log),  # type: ignore[arg-type]
                      overlays=None, reconciler=Part("reconciler", log),  # type: ignore[arg-type]
                      reviver=Part("reviver", log), controller=None,  # type: ignore[arg-type]
                      without_etcd=True)
    runtime._listen = lambda: Server(log)  # type: ignore[method-assign]
    with contextlib.ExitStack() as stack:
        runtime.start(stack)
    assert log[0] == "driver.restore"
