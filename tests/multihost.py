"""Two Docker hosts on one machine, for the overlay's e2e tests, demo and benchmark.

* **host A** is the machine itself: its dockerd, and a ``pycni serve`` the caller runs with
  ``--etcd`` (the e2e session's, restarted with ``PYCNI_ETCD``; the demo's own).
* **host B** is a network namespace (``pycni-hostb``) and a mount namespace of its own, held by
  one process that sleeps in both (the *holder*); everything of host B's runs inside them with
  ``nsenter``: a second dockerd (own data-root, exec-root, pidfile, socket, config, and the
  containerd it starts under its exec-root) and its own ``pycni serve`` (own state dir; the socket
  in host B's ``/run/docker/plugins``). Its mount namespace has private ``/run/docker/plugins``,
  ``/run/netns``, ``/var/lib/cni`` and ``/run/containerd``, bind-mounted from the rig's dirs, so
  neither host sees the other's plugins, staging namespaces or host-local reservations; its
  network namespace has its own links, routes and iptables.
* **the underlay**: a veth pair, ``pycni-ula`` (host A, 10.203.253.1/30) to ``pycni-ulb`` (host
  B, 10.203.253.2/30). etcd listens on host A's underlay address.

Everything stays inside the machine: the containers' traffic between the hosts is VXLAN over
the veth pair. :meth:`Rig.down` removes all of it, whatever :meth:`Rig.up` got to. Callers take
the leak audit's lock (:func:`tests.leaks.exclusive`) around both: another test run's audit on
this machine would see the rig's links and namespaces come and go.

``python -m tests.multihost up|down|demo`` (scripts/multihost.sh) runs it by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shim.client import PluginClient
from shim.errors import PycniError
from tests import leaks
from tests.etcd import EtcdServer

REPO = Path(__file__).resolve().parent.parent
NETNS = "pycni-hostb"
VETH_A, VETH_B = "pycni-ula", "pycni-ulb"
UNDERLAY_A, UNDERLAY_B = "10.203.253.1", "10.203.253.2"
RUN = Path("/run/pycni-hostb")
DATA = Path("/var/lib/pycni-hostb")
SOCKET_B = RUN / "docker.sock"
#: the directories host B's mount namespace sees in place of the machine's
PRIVATE = {
    "/run/docker/plugins": RUN / "plugins",
    "/run/netns": RUN / "netns",
    "/run/containerd": RUN / "containerd-system",
    "/var/lib/cni": DATA / "cni",
}
IMAGE = "pycni-test:busybox"


def sh(*args: str, check: bool = True, timeout: float = 120, input: bytes | None = None,
       ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=input is None, timeout=timeout,
                          check=False, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}")
    return proc


class Rig:
    """The two hosts; :meth:`up` and :meth:`down` (idempotent, removes whatever is there)."""

    def __init__(self) -> None:
        self.etcd: EtcdServer | None = None
        self.holder: subprocess.Popen[bytes] | None = None
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.pycni_b: subprocess.Popen[bytes] | None = None

    # --- host B --------------------------------------------------------------------------------

    def enter(self) -> list[str]:
        """The command prefix that runs something inside host B."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"]

    def docker_b(self, *args: str, check: bool = True, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
        return sh("docker", "-H", f"unix://{SOCKET_B}", *args, check=check, timeout=timeout)

    def in_b(self, *args: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        return sh(*self.enter(), *args, check=check, timeout=timeout)

    def up(self, *, with_pycni_b: bool = True) -> None:
        self.down()
        for d in (RUN, DATA, *PRIVATE.values()):
            d.mkdir(parents=True, exist_ok=True)
        self._underlay()
        self.etcd = EtcdServer(UNDERLAY_A, root=DATA / "etcd")
        self.etcd.start()
        self._holder()
        self._dockerd()
        if with_pycni_b:
            self.start_pycni_b()

    def _underlay(self) -> None:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns", NETNS)
        sh("ip", "addr", "add", f"{UNDERLAY_A}/30", "dev", VETH_A)
        sh("ip", "link", "set", VETH_A, "up")
        sh("ip", "-n", NETNS, "addr", "add", f"{UNDERLAY_B}/30", "dev", VETH_B)
        sh("ip", "-n", NETNS, "link", "set", VETH_B, "up")
        sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        # host B's default route is the underlay, as a real host's would be
        sh("ip", "-n", NETNS, "route", "add", "default", "via", UNDERLAY_A)

    def _holder(self) -> None:
        mounts = " && ".join(
            f"mkdir -p {target} && mount --bind {source} {target}"
            for target, source in PRIVATE.items())
        # host B's own /sys (its links in /sys/class/net), with the machine's cgroups in it
        keep = RUN / "cgroup"
        sysfs = (f"mkdir -p {keep} && mount --rbind /sys/fs/cgroup {keep} && "
                 f"mount -t sysfs sysfs /sys && mount --rbind {keep} /sys/fs/cgroup && "
                 f"umount -l {keep}")
        script = f"{sysfs} && {mounts} && echo ready && exec sleep 2147483647"
        self.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{NETNS}", "unshare", "--mount", "--propagation",
             "private", "--", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            err = self.holder.stderr.read() if self.holder.stderr else b""
            raise AssertionError(f"host B's namespaces: {line!r} {err!r}")
        (RUN / "holder.pid").write_text(str(self.holder.pid))

    def _dockerd(self) -> None:
        (RUN / "daemon.json").write_text("{}\n")
        with open(RUN / "dockerd.log", "ab") as log:
            self.dockerd = subprocess.Popen(
                [*self.enter(), "dockerd", "--data-root", str(DATA / "docker"),
                 "--exec-root", str(RUN / "exec"), "--pidfile", str(RUN / "docker.pid"),
                 "-H", f"unix://{SOCKET_B}", "--config-file", str(RUN / "daemon.json"),
                 "--bridge", "none", "--cgroup-parent", "pycni-hostb"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise AssertionError(f"host B's dockerd exited:\n{self._tail('dockerd.log')}")
            if self.docker_b("info", check=False, timeout=10).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"host B's dockerd did not answer:\n{self._tail('dockerd.log')}")
        if self.docker_b("image", "inspect", IMAGE, check=False).returncode != 0:
            self._import_image()

    def _import_image(self) -> None:
        """The test image, made as scripts/engine.sh makes it (the machine's dockerd is not
        asked: the rig needs nothing of host A's engine)."""
        root = RUN / "image"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
        (root / "www").mkdir(exist_ok=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for applet in sh("/bin/busybox", "--list").stdout.split():
            if applet != "busybox" and not (root / "bin" / applet).exists():
                (root / "bin" / applet).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True,
                             check=True, timeout=60).stdout
        sh("docker", "-H", f"unix://{SOCKET_B}", "import", "-c", "ENV PATH=/bin", "-",
           IMAGE, input=tar)
        shutil.rmtree(root, ignore_errors=True)

    def start_pycni_b(self, **env_extra: str) -> None:
        """Host B's pycni; ``env_extra`` adds to its environment (``PYCNI_OVERLAY_TTL="5"``)."""
        assert self.etcd is not None
        env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET_B}", **env_extra}
        with open(RUN / "pycni.log", "ab") as log:
            self.pycni_b = subprocess.Popen(
                [*self.enter(), str(REPO / ".venv" / "bin" / "pycni"), "serve",
                 "--state-dir", str(DATA / "state"), "--cache-dir", "/var/lib/cni",
                 "--etcd", self.etcd.url, "--underlay-address", UNDERLAY_B,
                 "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        (RUN / "pycni.pid").write_text(str(self.pycni_b.pid))
        client = PluginClient(str(RUN / "plugins" / "pycni.sock"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.pycni_b.poll() is not None:
                raise AssertionError(f"host B's pycni exited:\n{self._tail('pycni.log')}")
            with contextlib.suppress(PycniError):
                if client.post_raw("Plugin.Activate", b"{}")[0] == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"host B's pycni did not answer:\n{self._tail('pycni.log')}")

    def stop_pycni_b(self, sig: int = signal.SIGTERM) -> None:
        if self.pycni_b is not None and self.pycni_b.poll() is None:
            self.pycni_b.send_signal(sig)
            try:
                self.pycni_b.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.pycni_b.kill()
                self.pycni_b.wait(timeout=5)
        # a SIGKILLed pycni leaves its socket: the next one removes a stale one itself

    def _tail(self, name: str) -> str:
        try:
            return (RUN / name).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"--- host B {n}\n{self._tail(n)}" for n in ("pycni.log", "dockerd.log"))

    # --- teardown ------------------------------------------------------------------------------

    def down(self) -> None:
        """Remove the whole rig: host B's containers and networks, its pycni, dockerd and
        namespaces, the underlay, etcd, the rig's directories. Works on a rig some earlier
        process left (it finds host B by its holder's pid file)."""
        holder_pid = self._holder_pid()
        if holder_pid and SOCKET_B.exists():
            ids = self.docker_b("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker_b("rm", "-f", *ids, check=False, timeout=60)
            for net in self.docker_b("network", "ls", "--filter", "driver=pycni", "-q",
                                     check=False, timeout=30).stdout.split():
                self.docker_b("network", "rm", net, check=False, timeout=60)
        self.stop_pycni_b()
        if self.pycni_b is None:  # one an earlier process started
            self._stop_pid(_read_pid(RUN / "pycni.pid"), "pycni")
        if self.dockerd is not None:
            self.dockerd.terminate()
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(timeout=10)
        else:
            self._stop_pid(_read_pid(RUN / "docker.pid"), "dockerd")
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(timeout=10)
        elif holder_pid:
            self._stop_pid(holder_pid, "sleep", sig=signal.SIGKILL)
        self.holder = self.dockerd = self.pycni_b = None
        if self.etcd is not None:
            self.etcd.stop()
            self.etcd = None
        else:
            self._stop_pid(_read_pid(DATA / "etcd" / "etcd.pid"), "etcd")
        sh("ip", "link", "del", VETH_A, check=False)
        sh("ip", "netns", "del", NETNS, check=False)
        for d in (RUN, DATA):
            shutil.rmtree(d, ignore_errors=True)

    def _holder_pid(self) -> int:
        if self.holder is not None:
            return self.holder.pid
        return _read_pid(RUN / "holder.pid")

    @staticmethod
    def _stop_pid(pid: int, comm: str, sig: int = signal.SIGTERM) -> None:
        """Stop the process ``pid`` if it is still the ``comm`` we started, and wait."""
        if not pid or _comm(pid) != comm:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while _comm(pid) == comm and time.monotonic() < deadline:
            time.sleep(0.2)
        if _comm(pid) == comm:
            os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _comm(pid: int) -> str:
    """The command name of a live process ("" for none, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return "" if rest.split()[:1] == ["Z"] else name


def main(argv: list[str]) -> int:
    from tests import demo_multihost

    command = argv[1] if len(argv) > 1 else ""
    rig = Rig()
    with leaks.exclusive():
        if command == "down":
            rig.down()
            return 0
        if command == "demo":
            return int(demo_multihost.run(rig))
    print("usage: python -m tests.multihost down|demo", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
