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


def make_tls(root: Path, host: str) -> dict[str, Path]:
    """A CA, a server certificate for ``host`` and a client certificate, with openssl. The
    server's certificate is good for client auth too: etcd's JSON gateway dials etcd's own
    gRPC with it."""
    files = {k: root / f"{k}.pem" for k in ("ca", "ca-key", "server", "server-key", "client",
                                             "client-key")}
    days = ["-days", "2"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pycni-test-ca",
            "-keyout", str(files["ca-key"]), "-out", str(files["ca"]), *days)
    server_ext = [f"subjectAltName=IP:{host}", "extendedKeyUsage=serverAuth,clientAuth"]
    for name, extra in (("server", server_ext),
                        ("client", ["extendedKeyUsage=clientAuth"])):
        csr = root / f"{name}.csr"
        ext = root / f"{name}.ext"
        ext.write_text("".join(line + chr(10) for line in extra))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=pycni-test-{name}",
                "-keyout", str(files[f"{name}-key"]), "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey",
                str(files["ca-key"]), "-CAcreateserial", "-out", str(files[name]),
                "-extfile", str(ext), *days)
    return files


class EtcdServer:
    def __init__(self, host: str = "127.0.0.1", root: Path | None = None, *,
                 tls: bool = False) -> None:
        self.host = host
        self.root = root or Path(tempfile.mkdtemp(prefix="pycni-etcd-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port(host)
        self.peer_port = free_port("127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None
        #: with ``tls``: client certificates required, checked against the test's own CA
        self.tls = make_tls(self.root, host) if tls else {}

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def endpoint(self) -> Endpoint:
        if not self.tls:
            return Endpoint(self.url)
        return Endpoint(self.url, ca=str(self.tls["ca"]), cert=str(self.tls["client"]),
                        key=str(self.tls["client-key"]))

    def client(self) -> Etcd:
        return Etcd(self.endpoint(), timeout=3)

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
                 "--initial-cluster", f"pycni-test={peer}", *self._tls_flags()],
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

    def _tls_flags(self) -> list[str]:
        if not self.tls:
            return []
        return ["--cert-file", str(self.tls["server"]), "--key-file", str(self.tls["server-key"]),
                "--client-cert-auth", "--trusted-ca-file", str(self.tls["ca"])]

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
