"""A real etcd for the integration and e2e tiers: one member, a data dir of its own, free ports.

Started on loopback by default, or on an address the test owns (the two-host rig's underlay).
Its data dir survives :meth:`EtcdServer.restart`, as a real etcd's does.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from shim.errors import StoreUnavailable
from shim.overlay.store import Endpoint, Etcd


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    def __init__(self, host: str = "127.0.0.1", root: Path | None = None) -> None:
        self.host = host
        self.root = root or Path(tempfile.mkdtemp(prefix="pycni-etcd-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port(host)
        self.peer_port = free_port("127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self) -> Etcd:
        return Etcd(Endpoint(self.url), timeout=3)

    def start(self, timeout: float = 30) -> None:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise AssertionError("etcd is not installed (make deps installs etcd-server)")
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.root / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [etcd, "--name", "pycni-test", "--data-dir", str(self.root / "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"pycni-test={peer}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.root / "etcd.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        kv = self.client()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"etcd exited {self.proc.returncode}:\n{self.log()}")
            try:
                kv.get("/pycni/probe")
                return
            except StoreUnavailable:
                time.sleep(0.2)
        raise AssertionError(f"etcd did not answer on {self.url} within {timeout:.0f}s:\n"
                             f"{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "etcd.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""
