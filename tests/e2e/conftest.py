"""A real ``pycni serve`` for the e2e tier, and a tracker that removes what a test made."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shim.client import PluginClient
from shim.errors import PycniError
from tests.conftest import CNI_BIN, CNI_PATH, PLUGINS_SPEAK_1_1, REPO, docker, unmet

SOCKET = "/run/docker/plugins/pycni.sock"
#: ``PYCNI_E2E_PLUGIN=1`` (``make test-plugin``): the tests drive the enabled managed plugin
#: instead of a ``pycni serve`` they start themselves.
PLUGIN_MODE = os.environ.get("PYCNI_E2E_PLUGIN") == "1"
#: the managed plugin's name, as Docker shows it (``docker plugin ls``, a network's driver)
PLUGIN = "pycni:latest"
#: the driver of every pycni network the tests create: ``docker network create -d DRIVER``
DRIVER = PLUGIN if PLUGIN_MODE else "pycni"


def not_with_plugin(reason: str) -> pytest.MarkDecorator:
    """Skip a test in plugin mode, saying why (it needs what only a child ``pycni serve`` has)."""
    return pytest.mark.skipif(PLUGIN_MODE, reason=f"plugin mode: {reason}")


def driver_of(label: str) -> str:
    """The ``-d`` of a side in a parity test: ``"pycni"`` → :data:`DRIVER`, others as they are."""
    return DRIVER if label == "pycni" else label
#: One e2e session (or benchmark) at a time per machine: they share dockerd, the plugin socket
#: and the host state the leak audit compares.
LOCK = "/run/lock/pycni-e2e.lock"


def exclusive_engine(timeout: float = 1800) -> int:
    """Take the machine-wide e2e lock (waiting for another session); returns the held fd.

    A caller that already holds it for the whole run (``make test-plugin``, ``make test-compat``:
    they swap what serves Docker around the tests) says so with ``PYCNI_E2E_LOCK_HELD=1``."""
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    if os.environ.get("PYCNI_E2E_LOCK_HELD") == "1":
        return fd
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise AssertionError(f"another e2e session held {LOCK} for {timeout:.0f}s")
            time.sleep(1)


@functools.cache
def engine_version() -> tuple[int, int]:
    """The serving dockerd's (major, minor). The tier runs on 26.1 (``make test``) and on Debian
    12's 20.10 (``make test-compat``), whose own bridge driver differs in places; a parity test
    asks this to know which bridge it compares pycni with."""
    version = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


FAIL_PLUGIN = """#!/bin/sh
# A CNI plugin that refuses every ADD with a spec error; everything else succeeds.
cat >/dev/null
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}' ;;
ADD) echo '{"code":7,"msg":"pycni-test-fail refuses on purpose","details":"test plugin"}'; exit 1 ;;
*) exit 0 ;;
esac
"""


def call(method: str, body: bytes = b"{}", path: str | None = None) -> tuple[int, bytes]:
    """POST to the plugin socket as Docker does; (status, body). PycniError if nothing answers."""
    return PluginClient(path or socket_path()).post_raw(method, body)


def socket_path() -> str:
    """Where the driver under test answers: its own socket, or the managed plugin's."""
    return _plugin_socket(plugin_id()) if PLUGIN_MODE else SOCKET


def _plugin_socket(plugin: str) -> str:
    return f"/run/docker/plugins/{plugin}/pycni.sock"


@functools.cache
def plugin_id() -> str:
    """The managed plugin's id (its socket's directory under /run/docker/plugins)."""
    return docker("plugin", "inspect", "-f", "{{.Id}}", PLUGIN).stdout.strip()


class PycniServer:
    """``pycni serve`` as a child process on Docker's plugin socket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.conf_dir = root / "net.d"
        self.plugin_dir = root / "bin"
        self.log_path = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: more ``pycni serve`` arguments for the next start (a test sets and resets them)
        self.serve_args: list[str] = []
        for d in (self.conf_dir, self.plugin_dir):
            d.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [
                    str(REPO / ".venv" / "bin" / "pycni"), "serve",
                    "--state-dir", str(self.state_dir),
                    "--conf-dir", str(self.conf_dir),
                    "--cni-path", f"{self.plugin_dir}:{CNI_PATH}",
                    "--log-level", "debug",
                    *self.serve_args,
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pycni serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if call("Plugin.Activate")[0] == 200:
                    return
            except PycniError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"pycni serve did not answer within 15s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pycni serve ignored signal {sig}:\n{self.log()}") from None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-200000:]

    def write_conflist(self, name: str, conf: dict[str, object]) -> Path:
        import json

        path = self.conf_dir / f"50-{name}.conflist"
        path.write_text(json.dumps({"name": name, **at_plugins_version(conf)}, indent=1))
        return path


def at_plugins_version(conf: dict[str, Any]) -> dict[str, Any]:
    """A chain of reference plugins at CNI 1.1.0 where the plugins under test speak it (sid's
    1.9.1: STATUS before ADD, 1.1.0 results), as users of today's plugins write it; as written
    otherwise (Debian 12's 1.1.1 stops at 1.0.0, and the tests' own plugins answer 1.0.0)."""
    plugins = conf.get("plugins")
    if not PLUGINS_SPEAK_1_1 or conf.get("cniVersion") != "1.0.0" or not isinstance(plugins, list):
        return conf
    if not all(os.access(os.path.join(CNI_BIN, str(p.get("type"))), os.X_OK) for p in plugins):
        return conf
    return {**conf, "cniVersion": "1.1.0"}


class ManagedPlugin(PycniServer):
    """The managed plugin ``make test-plugin`` enabled, in the place of a child ``pycni serve``.

    Its state is the host's ``/var/lib/pycni``; its conf and plugin dirs are the host dirs
    plugin.json mounts (``docker plugin inspect`` says which). Stopping is ``docker plugin
    disable -f`` (Docker sends SIGTERM); Docker offers no way to SIGKILL a plugin, so tests that
    need one skip. The log is the plugin's lines in dockerd's log.
    """

    def __init__(self) -> None:  # no super().__init__: no directory of its own
        self.id = plugin_id()
        self.socket = _plugin_socket(self.id)
        info = json.loads(docker("plugin", "inspect", PLUGIN).stdout)[0]
        sources = {m["Destination"]: m["Source"] for m in info["Settings"]["Mounts"]}
        self.root = Path("/var/lib/pycni")
        self.state_dir = self.root
        self.conf_dir = Path(sources["/etc/cni/net.d"])
        self.plugin_dir = Path(sources["/opt/cni/bin"])
        self.log_path = Path(os.environ.get("PYCNI_DOCKERD_LOG", "/var/log/pycni-dockerd.log"))
        self.proc = None

    def track_added_files(self) -> Callable[[], list[Path]]:
        """The files added to the conf and plugin dirs since this call, when asked."""
        dirs = (self.conf_dir, self.plugin_dir)
        before = {p for d in dirs for p in d.iterdir()}
        return lambda: sorted({p for d in dirs for p in d.iterdir()} - before)

    def wait_answers(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if call("Plugin.Activate", path=self.socket)[0] == 200:
                    return
            except PycniError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{PLUGIN} did not answer within {timeout:.0f}s:\n{self.log()}")
            time.sleep(0.1)

    def start(self) -> None:
        docker("plugin", "enable", PLUGIN)
        self.wait_answers()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if sig != signal.SIGTERM:
            pytest.skip(f"plugin mode: Docker stops a managed plugin with SIGTERM only, not {sig}")
        # -f: networks using it stay (their driver comes back with the plugin).
        docker("plugin", "disable", "-f", PLUGIN)
        return 0

    def log(self) -> str:
        """The plugin's stderr lines that dockerd logged (``msg="..." plugin=<id>``)."""
        tag = f"plugin={self.id}"
        lines = []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if tag in line:
                    match = _MSG.search(line)
                    if match:
                        lines.append(json.loads(f'"{match.group(1)}"'))
        return "\n".join(lines)[-200000:]


_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="session")
def pycni(docker_engine: object) -> Iterator[PycniServer]:
    """The session's pycni server. Refuses to start over one someone else is running."""
    lock = exclusive_engine()
    if os.path.exists(SOCKET):
        try:
            call("Plugin.Activate", path=SOCKET)
        except PycniError:
            os.unlink(SOCKET)  # stale
        else:
            pytest.fail(f"another pycni is serving {SOCKET}; stop it before running the e2e tests")
    if PLUGIN_MODE:
        yield from _managed_plugin()
        os.close(lock)
        return
    root = Path(tempfile.mkdtemp(prefix="pycni-e2e-"))
    server = PycniServer(root)
    fail = server.plugin_dir / "pycni-test-fail"
    fail.write_text(FAIL_PLUGIN)
    fail.chmod(0o755)
    server.start()
    _remove_leftovers()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        code = server.stop()
        assert code == 0, f"pycni serve exited {code} on SIGTERM"
    assert not os.path.exists(SOCKET), "pycni serve left its socket behind"
    os.close(lock)


def _managed_plugin() -> Iterator[PycniServer]:
    """The enabled managed plugin for the session; the files the tests add to its host dirs go.

    ``pycni`` commands the tests run find the plugin through ``PYCNI_SOCKET``, and its driver
    name (``pycni:latest``) by themselves, asking Docker, as on a user's host.
    """
    proc = docker("plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN, check=False)
    if proc.stdout.strip() != "true":
        unmet(f"PYCNI_E2E_PLUGIN=1 needs the managed plugin {PLUGIN} enabled (make plugin)")
    server = ManagedPlugin()
    added = server.track_added_files()
    fail = server.plugin_dir / "pycni-test-fail"
    fail.write_text(FAIL_PLUGIN)
    fail.chmod(0o755)
    saved = {k: os.environ.get(k) for k in ("PYCNI_SOCKET", "PYCNI_DRIVER_NAME")}
    os.environ.pop("PYCNI_DRIVER_NAME", None)
    os.environ.update(PYCNI_SOCKET=server.socket)
    try:
        server.wait_answers()
        _remove_leftovers()
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for path in added():
            path.unlink(missing_ok=True)


def _remove_leftovers() -> None:
    """Containers and networks an aborted earlier run left (fixed names would collide).

    Runs with the session's server up, so Docker can reach the driver for each DeleteNetwork;
    the server's own start-up reconciliation has already swept orphan namespaces, links and
    cache entries.
    """
    prefixes = ("pycni-e2e", "pycni-bench", "pycni-demo")
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    stale = [n for n in names if n.startswith(prefixes)]
    if stale:
        docker("rm", "-f", *stale, check=False)
    networks = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    for name in networks:
        if name.startswith(prefixes):
            docker("network", "rm", name, check=False)


class Tracker:
    """Remembers containers and networks a test made and removes them, even if it fails."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.networks: list[str] = []

    def network(self, name: str, *args: str) -> str:
        self.networks.append(name)
        docker("network", "create", *args, name)
        return name

    def run(self, name: str, *args: str) -> str:
        self.containers.append(name)
        docker("run", "-d", "--name", name, *args)
        return name

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            docker("rm", "-f", name, check=False)
        for name in reversed(self.networks):
            docker("network", "rm", name, check=False)


@pytest.fixture
def e2e(pycni: PycniServer, leak_check: list[str]) -> Iterator[Tracker]:
    """Per-test: a tracker whose cleanup runs before the leak audit compares the host."""
    tracker = Tracker()
    yield tracker
    tracker.cleanup()


@pytest.fixture(autouse=True)
def _state_dir_for_leak_audit(pycni: PycniServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(pycni.state_dir))
