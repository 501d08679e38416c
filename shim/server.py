"""Serving the app on Docker's plugin socket with waitress.

Docker discovers a plugin by the socket's name in ``/run/docker/plugins``. The socket is created
mode 0600 (only root, like dockerd, may talk to it); a stale one left by a killed pycni is removed
first; SIGTERM and SIGINT stop the server and remove the socket, so Docker sees "plugin not found"
rather than "connection refused".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from waitress.server import create_server

from .app import create_app
from .containers import Containers
from .driver import Driver
from .errors import ConfigError, PycniError
from .overlay import manager as overlay_manager
from .reconcile import Reconciler
from .revive import Reviver
from .settings import Settings
from .watch import NETWORKS, Watch

log = logging.getLogger(__name__)


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise PycniError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise PycniError(f"another process is already serving {path}")


def notify_ready() -> None:
    """Tell systemd we are serving (``Type=notify``); nothing to do outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"READY=1", address)
        except OSError as exc:
            log.warning("could not notify systemd: %s", exc)


@dataclass
class Runtime:
    """The owner of pycni serve's parts: built from the settings, started in order, stopped in
    reverse (containerd's plugin graph is the model).

    Start order, each step registering its stop on the caller's ``ExitStack``:

    1. the overlays' records and VTEPs (:meth:`Overlays.load`), then the driver's records and
       what the host lost (:meth:`Driver.restore`: rules, published ports, proxies);
    2. the plugin socket (bound and listening: Docker's calls queue from here);
    3. the reconciler, the reviver (Docker calls the driver while it starts the containers it
       could not start without pycni), the overlay loop, the ``--network none`` controller;
    4. serving: the first thing stopped, so Docker sees "plugin not found" at once, and
       requests already running finish (a CreateEndpoint cut in half is work for gc).

    Stopping is the stack closing: the socket goes, running requests finish, then the
    controller, the overlay loop (leases stay: they outlive a restart by their TTL), the
    reviver and the reconciler stop, and the proxies close with every connection through them.
    """

    settings: Settings
    driver: Driver
    overlays: overlay_manager.Overlays | None
    reconciler: Reconciler
    reviver: Reviver
    controller: Watch | None
    threads: int = 64
    #: serve although the state has overlay networks and no etcd is given (``--without-etcd``)
    without_etcd: bool = False
    server: Any = None

    @classmethod
    def build(cls, settings: Settings, *, threads: int = 64, watch: bool = False,
              without_etcd: bool = False) -> Runtime:
        """Every part, from the settings; nothing is read or touched on the host yet."""
        overlays = overlay_manager.from_settings(settings)
        driver = Driver(settings, overlays=overlays)
        return cls(
            settings=settings,
            driver=driver,
            overlays=overlays,
            reconciler=Reconciler(driver),
            reviver=Reviver(settings.driver_name),
            controller=Watch(Containers.from_settings(settings)) if watch else None,
            threads=threads,
            without_etcd=without_etcd,
        )

    def start(self, stack: contextlib.ExitStack) -> None:
        if self.overlays is None and not self.without_etcd:
            self._refuse_stranded_overlays()
        self.settings.remember()  # what pycni check and doctor run plugins with
        if self.overlays is not None:
            self.overlays.load()
        self.driver.restore()
        stack.callback(self.driver.close)
        with contextlib.ExitStack() as opening:
            self.server = self._listen()
            opening.callback(self._stop_serving)
            self.reconciler.start()
            stack.callback(self.reconciler.stop)
            self.reviver.start()
            stack.callback(self.reviver.stop)
            if self.overlays is not None:
                # leases kept alive and peers' routes programmed, beside serving
                self.overlays.start()
                stack.callback(self.overlays.stop)
            if self.controller is not None:
                self._start_controller(self.controller)
                stack.callback(self._stop_controller, self.controller)
            opening.pop_all()
        stack.callback(self._stop_serving)

    def serve(self) -> None:
        self.server.run()

    def _refuse_stranded_overlays(self) -> None:
        """Without etcd, this host's overlay networks would go on taking containers that reach
        no other host, and their leases lapse: refuse, naming them."""
        names = sorted({j.name for j in overlay_manager.read_records(self.settings.state_dir)
                        .values()})
        if names:
            raise ConfigError(
                f"this host is on overlay network(s) {', '.join(names)}, which span hosts "
                "through etcd, and pycni serve was given no --etcd (PYCNI_ETCD): their "
                "containers would reach no other host and the subnets' leases lapse; start it "
                "with --etcd URL, or with --without-etcd to serve the other networks anyway "
                "(remove the overlay networks with docker network rm first to be rid of them)")

    def _listen(self) -> Any:
        path = self.settings.socket_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _remove_stale_socket(path)
        app = create_app(self.settings, self.driver)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others connect
        try:
            return create_server(app, unix_socket=path, unix_socket_perms="600",
                                 threads=self.threads, channel_timeout=300,
                                 clear_untrusted_proxy_headers=True)
        finally:
            os.umask(old_umask)

    def _stop_serving(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.settings.socket_path)
        self.server.close()
        self.server.task_dispatcher.shutdown(cancel_pending=True,
                                             timeout=self.settings.plugin_timeout)

    @staticmethod
    def _start_controller(controller: Watch) -> None:
        threading.Thread(target=controller.follow, name="pycni-watch-events",
                         daemon=True).start()
        log.info("pycni watching Docker's events for containers labelled %s", NETWORKS)

    @staticmethod
    def _stop_controller(controller: Watch) -> None:
        controller.stopping.set()  # no new container work; what runs finishes
        controller.serial.close()


def run(settings: Settings, threads: int = 64, watch: bool = False,
        without_etcd: bool = False) -> None:
    """Serve until SIGTERM or SIGINT. ``watch``: also run the controller of the ``--network
    none`` mode (:mod:`shim.watch`) beside the driver, as ``pycni watch`` would."""
    runtime = Runtime.build(settings, threads=threads, watch=watch, without_etcd=without_etcd)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with contextlib.ExitStack() as stack:
        try:
            runtime.start(stack)
            log.info("pycni serving %s (state %s, CNI_PATH %s)", settings.socket_path,
                     settings.state_dir, ":".join(settings.cni_path))
            notify_ready()
            runtime.serve()
        except SystemExit:
            pass
    log.info("pycni stopped")
    sys.exit(0)
