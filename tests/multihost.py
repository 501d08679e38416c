"""Docker hosts on one machine, for the overlay's e2e tests, demo and benchmark: two, or three.

* **host A** is the machine itself: its dockerd, and a ``pycni serve`` the caller runs with
  ``--etcd`` (the e2e session's, restarted with ``PYCNI_ETCD``; the demo's own).
* **host B** (and **host C** when asked for) is a network namespace (``pycni-hostb``) and a
  mount namespace of its own, held by one process that sleeps in both (the *holder*);
  everything of the host's runs inside them with ``nsenter``: a second dockerd (own data-root,
  exec-root, pidfile, socket, config, and the containerd it starts under its exec-root) and its
  own ``pycni serve`` (own state dir; the socket in the host's ``/run/docker/plugins``). Its
  mount namespace has private ``/run/docker/plugins``, ``/run/netns``, ``/var/lib/cni`` and
  ``/run/containerd``, bind-mounted from the host's dirs, so no host sees another's plugins,
  staging namespaces or host-local reservations; its network namespace has its own links,
  routes and iptables.
* **the underlay**: a veth pair per namespaced host, to host A: ``pycni-ulba`` (A,
  10.203.253.1/30) to ``pycni-ulb`` (B, 10.203.253.2/30), and for C ``pycni-ulca``
  (10.203.253.5/30) to ``pycni-ulc`` (10.203.253.6/30). Each host's default route is its pair;
  host A forwards between B and C (one rule in its ``FORWARD``, the rig's own, for the
  underlay's links only). etcd listens on host A's underlay address.

Everything stays inside the machine: the containers' traffic between the hosts is VXLAN over
the veth pairs. :meth:`Rig.down` removes all of it, whatever :meth:`Rig.up` got to. Callers take
the leak audit's lock (:func:`tests.leaks.exclusive`) around both: another test run's audit on
this machine would see the rig's links and namespaces come and go.

``python -m tests.multihost down|demo`` (scripts/multihost.sh) runs it by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shim.client import PluginClient
from shim.errors import PycniError
from shim.overlay import leases
from tests import leaks
from tests.etcd import EtcdServer

REPO = Path(__file__).resolve().parent.parent
UNDERLAY_A = "10.203.253.1"
IMAGE = "pycni-test:busybox"
#: host A's rule that lets the underlay's packets between B and C through (Docker's FORWARD
#: policy is DROP)
FORWARD_RULE = ("FORWARD", "-i", "pycni-ul+", "-o", "pycni-ul+", "-j", "ACCEPT")


def sh(*args: str, check: bool = True, timeout: float = 120, input: bytes | None = None,
       ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=input is None, timeout=timeout,
                          check=False, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}")
    return proc


class Host:
    """One namespaced Docker host of the rig (``letter`` b or c): its underlay pair, holder,
    dockerd and pycni; :meth:`down` removes whatever of it is there, even an earlier
    process's."""

    def __init__(self, letter: str, index: int) -> None:
        self.letter = letter
        self.label = f"host {letter.upper()}"
        self.netns = f"pycni-host{letter}"
        self.veth_a, self.veth = f"pycni-ul{letter}a", f"pycni-ul{letter}"
        self.gateway = f"10.203.253.{4 * index + 1}"  # host A's end of the pair
        self.underlay = f"10.203.253.{4 * index + 2}"
        self.run_dir = Path(f"/run/pycni-host{letter}")
        self.data = Path(f"/var/lib/pycni-host{letter}")
        self.socket = self.run_dir / "docker.sock"
        #: the directories the host's mount namespace sees in place of the machine's
        self.private = {
            "/run/docker/plugins": self.run_dir / "plugins",
            "/run/netns": self.run_dir / "netns",
            "/run/containerd": self.run_dir / "containerd-system",
            "/var/lib/cni": self.data / "cni",
        }
        self.holder: subprocess.Popen[bytes] | None = None
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.pycni: subprocess.Popen[bytes] | None = None

    def enter(self) -> list[str]:
        """The command prefix that runs something inside this host."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"]

    def docker_cli(self) -> list[str]:
        return ["docker", "-H", f"unix://{self.socket}"]

    def docker(self, *args: str, check: bool = True, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
        return sh(*self.docker_cli(), *args, check=check, timeout=timeout)

    def inside(self, *args: str, check: bool = True, timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
        return sh(*self.enter(), *args, check=check, timeout=timeout)

    def up(self, etcd_url: str, *, with_pycni: bool = True) -> None:
        """The host on its underlay pair (:meth:`link`, made first)."""
        for d in (self.run_dir, self.data, *self.private.values()):
            d.mkdir(parents=True, exist_ok=True)
        self._holder()
        self._dockerd()
        if with_pycni:
            self.start_pycni(etcd_url)

    def link(self) -> None:
        """The host's network namespace on its veth pair to host A."""
        ns = self.netns
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth,
           "netns", ns)
        sh("ip", "addr", "add", f"{self.gateway}/30", "dev", self.veth_a)
        sh("ip", "link", "set", self.veth_a, "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.underlay}/30", "dev", self.veth)
        sh("ip", "-n", ns, "link", "set", self.veth, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # the host's default route is the underlay, as a real host's would be
        sh("ip", "-n", ns, "route", "add", "default", "via", self.gateway)

    def _holder(self) -> None:
        mounts = " && ".join(
            f"mkdir -p {target} && mount --bind {source} {target}"
            for target, source in self.private.items())
        # the host's own /sys (its links in /sys/class/net), with the machine's cgroups in it
        keep = self.run_dir / "cgroup"
        sysfs = (f"mkdir -p {keep} && mount --rbind /sys/fs/cgroup {keep} && "
                 f"mount -t sysfs sysfs /sys && mount --rbind {keep} /sys/fs/cgroup && "
                 f"umount -l {keep}")
        script = f"{sysfs} && {mounts} && echo ready && exec sleep 2147483647"
        self.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--propagation",
             "private", "--", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            err = self.holder.stderr.read() if self.holder.stderr else b""
            raise AssertionError(f"{self.label}'s namespaces: {line!r} {err!r}")
        (self.run_dir / "holder.pid").write_text(str(self.holder.pid))

    def _dockerd(self) -> None:
        run = self.run_dir
        (run / "daemon.json").write_text("{}\n")
        with open(run / "dockerd.log", "ab") as log:
            self.dockerd = subprocess.Popen(
                [*self.enter(), "dockerd", "--data-root", str(self.data / "docker"),
                 "--exec-root", str(run / "exec"), "--pidfile", str(run / "docker.pid"),
                 "-H", f"unix://{self.socket}", "--config-file", str(run / "daemon.json"),
                 "--bridge", "none", "--cgroup-parent", self.netns],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise AssertionError(f"{self.label}'s dockerd exited:\n"
                                     f"{self._tail('dockerd.log')}")
            if self.docker("info", check=False, timeout=10).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"{self.label}'s dockerd did not answer:\n"
                                 f"{self._tail('dockerd.log')}")
        if self.docker("image", "inspect", IMAGE, check=False).returncode != 0:
            self._import_image()

    def _import_image(self) -> None:
        """The test image, made as scripts/engine.sh makes it (the machine's dockerd is not
        asked: the rig needs nothing of host A's engine)."""
        root = self.run_dir / "image"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
        (root / "www").mkdir(exist_ok=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for applet in sh("/bin/busybox", "--list").stdout.split():
            if applet != "busybox" and not (root / "bin" / applet).exists():
                (root / "bin" / applet).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True,
                             check=True, timeout=60).stdout
        sh(*self.docker_cli(), "import", "-c", "ENV PATH=/bin", "-", IMAGE, input=tar)
        shutil.rmtree(root, ignore_errors=True)

    def start_pycni(self, etcd_url: str, **env_extra: str) -> None:
        """The host's pycni; ``env_extra`` adds to its environment (``PYCNI_OVERLAY_TTL="5"``)."""
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", **env_extra}
        with open(self.run_dir / "pycni.log", "ab") as log:
            self.pycni = subprocess.Popen(
                [*self.enter(), str(REPO / ".venv" / "bin" / "pycni"), "serve",
                 "--state-dir", str(self.data / "state"), "--cache-dir", "/var/lib/cni",
                 "--etcd", etcd_url, "--underlay-address", self.underlay,
                 "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        (self.run_dir / "pycni.pid").write_text(str(self.pycni.pid))
        client = PluginClient(str(self.run_dir / "plugins" / "pycni.sock"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.pycni.poll() is not None:
                raise AssertionError(f"{self.label}'s pycni exited:\n{self._tail('pycni.log')}")
            with contextlib.suppress(PycniError):
                if client.post_raw("Plugin.Activate", b"{}")[0] == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.label}'s pycni did not answer:\n{self._tail('pycni.log')}")

    def stop_pycni(self, sig: int = signal.SIGTERM) -> None:
        if self.pycni is not None and self.pycni.poll() is None:
            self.pycni.send_signal(sig)
            try:
                self.pycni.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.pycni.kill()
                self.pycni.wait(timeout=5)
        # a SIGKILLed pycni leaves its socket: the next one removes a stale one itself

    def _tail(self, name: str) -> str:
        try:
            return (self.run_dir / name).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"--- {self.label} {n}\n{self._tail(n)}"
                         for n in ("pycni.log", "dockerd.log"))

    def down(self) -> None:
        """Remove the host: its containers and networks, its pycni, dockerd and namespaces, its
        underlay pair, its directories. Works on a host some earlier process left (it finds it
        by its holder's pid file)."""
        holder_pid = self._holder_pid()
        if holder_pid and self.socket.exists():
            ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
            for net in self.docker("network", "ls", "--filter", "driver=pycni", "-q",
                                   check=False, timeout=30).stdout.split():
                self.docker("network", "rm", net, check=False, timeout=60)
        self.stop_pycni()
        if self.pycni is None:  # one an earlier process started
            _stop_pid(_read_pid(self.run_dir / "pycni.pid"), "pycni")
        if self.dockerd is not None:
            self.dockerd.terminate()
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(timeout=10)
        else:
            _stop_pid(_read_pid(self.run_dir / "docker.pid"), "dockerd")
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(timeout=10)
        elif holder_pid:
            _stop_pid(holder_pid, "sleep", sig=signal.SIGKILL)
        self.holder = self.dockerd = self.pycni = None
        sh("ip", "link", "del", self.veth_a, check=False)
        sh("ip", "netns", "del", self.netns, check=False)
        for d in (self.run_dir, self.data):
            shutil.rmtree(d, ignore_errors=True)

    def _holder_pid(self) -> int:
        if self.holder is not None:
            return self.holder.pid
        return _read_pid(self.run_dir / "holder.pid")


class Rig:
    """Host A (the machine) and host B, with host C too when ``third``; etcd on A's underlay
    address. :meth:`up` and :meth:`down` (idempotent, removes whatever is there)."""

    DATA = Path("/var/lib/pycni-rig")

    def __init__(self, *, third: bool = False) -> None:
        self.etcd: EtcdServer | None = None
        self.b = Host("b", 0)
        self.c = Host("c", 1) if third else None

    @property
    def hosts(self) -> list[Host]:
        return [self.b] if self.c is None else [self.b, self.c]

    def up(self, *, with_pycni: bool = True) -> None:
        self.down()
        for host in self.hosts:
            host.link()
        sh("iptables", "-I", *FORWARD_RULE)
        self.etcd = EtcdServer(UNDERLAY_A, root=self.DATA / "etcd")  # on A's end of B's pair
        self.etcd.start()
        for host in self.hosts:
            host.up(self.etcd.url, with_pycni=with_pycni)

    def start_pycni(self, host: Host, **env_extra: str) -> None:
        assert self.etcd is not None
        host.start_pycni(self.etcd.url, **env_extra)

    def leases(self, overlay: str) -> dict[str, str]:
        """The per-host leases etcd holds for ``overlay``: key → holder."""
        assert self.etcd is not None
        return self.etcd.client().get_prefix(leases.leases_prefix(overlay))

    def subnet_of(self, overlay: str, underlay: str) -> str:
        """The per-host subnet etcd holds for the host at ``underlay`` on ``overlay``."""
        held = self.leases(overlay)
        for key, raw in held.items():
            if json.loads(raw)["underlay"] == underlay:
                return key.rsplit("/", 1)[1].replace("-", "/")
        raise AssertionError(f"no lease of {underlay} in {held}")

    def logs(self) -> str:
        return "\n".join(h.logs() for h in self.hosts)

    def down(self) -> None:
        """Remove the whole rig: every namespaced host (host C's too, if an earlier rig had
        one), etcd, the forwarding rule, the rig's directories."""
        hosts = self.hosts if self.c is not None else [self.b, Host("c", 1)]
        for host in hosts:
            host.down()
        if self.etcd is not None:
            self.etcd.stop()
            self.etcd = None
        else:
            _stop_pid(_read_pid(self.DATA / "etcd" / "etcd.pid"), "etcd")
        while sh("iptables", "-D", *FORWARD_RULE, check=False).returncode == 0:
            pass
        shutil.rmtree(self.DATA, ignore_errors=True)


def vtep_routes(host: Host | None, vtep: str) -> str:
    """The routes via ``vtep`` on host A (None) or a namespaced host."""
    netns = ("-n", host.netns) if host is not None else ()
    return sh("ip", *netns, "-4", "route", "show", "dev", vtep, check=False, timeout=10).stdout


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
