"""Serving the app on Docker's plugin socket with waitress.

Docker discovers a plugin by the socket's name in ``/run/docker/plugins``. The socket is created
mode 0600 (only root, like dockerd, may talk to it); a stale one left by a killed pycni is removed
first; SIGTERM and SIGINT stop the server and remove the socket, so Docker sees "plugin not found"
rather than "connection refused".
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import sys
import threading
from types import FrameType

from waitress.server import create_server

from .app import create_app
from .containers import Containers
from .driver import Driver
from .errors import PycniError
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


def run(settings: Settings, threads: int = 64, watch: bool = False) -> None:
    """Serve until SIGTERM or SIGINT. ``watch``: also run the controller of the ``--network
    none`` mode (:mod:`shim.watch`) beside the driver, as ``pycni watch`` would."""
    path = settings.socket_path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _remove_stale_socket(path)
    driver = Driver(settings)
    app = create_app(settings, driver)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        server = create_server(
            app,
            unix_socket=path,
            unix_socket_perms="600",
            threads=threads,
            channel_timeout=300,
            clear_untrusted_proxy_headers=True,
        )
    finally:
        os.umask(old_umask)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    controller: Watch | None = None
    try:
        log.info("pycni serving %s (state %s, CNI_PATH %s)", path, settings.state_dir,
                 ":".join(settings.cni_path))
        notify_ready()
        # Whatever a crash or a missed Docker call left behind is torn down right away, beside
        # serving: reconciliation takes the same per-network locks as Docker's calls, so a
        # CreateEndpoint Docker retries meanwhile is served, not raced.
        # It keeps looking while a leftover waits for Docker to drop its sandbox.
        reconciler = Reconciler(driver)
        reconciler.start()
        # Containers whose restart policy Docker honours as it starts, and which it could not
        # start because it started before pycni: started now, beside serving (Docker calls the
        # driver while it starts them), as Docker would have.
        Reviver(settings.driver_name).start()
        if watch:
            controller = _start_watch(settings)
        server.run()
    except SystemExit:
        pass
    finally:
        if controller is not None:  # no new container work; what runs finishes
            controller.stopping.set()
            controller.serial.close()
        # Stop taking requests first (Docker then sees "plugin not found", not a hang), then let
        # requests already running finish: a CreateEndpoint cut in half is work for gc.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server.close()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=settings.plugin_timeout)
        log.info("pycni stopped")
    sys.exit(0)


def _start_watch(settings: Settings) -> Watch:
    controller = Watch(Containers.from_settings(settings))
    threading.Thread(target=controller.follow, name="pycni-watch-events", daemon=True).start()
    log.info("pycni watching Docker's events for containers labelled %s", NETWORKS)
    return controller
