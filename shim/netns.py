"""Network namespaces, made, pinned and removed in process (no ``ip netns`` exec), and sockets
opened inside one (:func:`netns_socket`): the server's own threads never change namespace."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from .errors import NetlinkFailure

NETNS_DIR = "/run/netns"


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_NETLINK_ROUTE = 0


def ns_file(ns: str) -> str:
    return ns if ns.startswith("/") else netns_path(ns)


def netns_socket(
    ns: str,
    family: int = socket.AF_NETLINK,
    kind: int = socket.SOCK_DGRAM,
    proto: int = _NETLINK_ROUTE,
) -> socket.socket:
    """A socket (NETLINK_ROUTE unless told otherwise) that lives in netns ``ns``.

    A socket belongs to the netns it was created in, whatever its user does later. So a helper
    thread enters the netns (``setns`` changes only the calling thread's namespace), creates the
    socket, returns to the original netns and ends. pyroute2's own ``IPRoute(netns=...)`` forks a
    child that runs Python instead, which can deadlock in a multi-threaded server (a lock held by
    another thread at fork time is never released in the child).
    """
    box: dict[str, Any] = {}

    def work() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(ns_file(ns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(own)
            box["error"] = exc
            return
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                box["error"] = OSError(err, os.strerror(err))
                return
            try:
                box["sock"] = socket.socket(family, kind, proto)
            finally:
                if _libc.setns(own, _CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen
                    box["error"] = OSError(ctypes.get_errno(), "cannot return to own netns")
        finally:
            os.close(target)
            os.close(own)

    worker = threading.Thread(target=work, name="pycni-netns")
    worker.start()
    worker.join()
    if "error" in box:
        if "sock" in box:
            box["sock"].close()
        raise box["error"]
    sock: socket.socket = box["sock"]
    return sock


_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_netns_dir_ready = threading.Lock()
_netns_dir_shared = False


def _os_error(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}")


def _mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), b"none", flags, None) != 0:
        raise _os_error(f"mount {target}")


def _share_netns_dir() -> None:
    """Make ``/run/netns`` a shared mount of its own, as ``ip netns add`` does, so a namespace
    bound there is seen by every mount namespace (Docker's, a managed plugin's)."""
    global _netns_dir_shared
    with _netns_dir_ready:
        if _netns_dir_shared:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        try:
            _mount("", NETNS_DIR, _MS_SHARED | _MS_REC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # Not a mount point yet: bind it onto itself, then share it.
            _mount(NETNS_DIR, NETNS_DIR, _MS_BIND | _MS_REC)
            _mount("", NETNS_DIR, _MS_SHARED | _MS_REC)
        _netns_dir_shared = True


def _bind_new_netns(path: str) -> None:
    """In a helper thread: a new netns (``unshare`` changes only the calling thread's), bound
    onto ``path``; the thread then returns to its own netns and ends. No process is forked and
    no ``ip`` is exec'd: this is ``ip netns add`` without its ~4 ms of exec."""
    box: dict[str, OSError] = {}

    def work() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.unshare(_CLONE_NEWNET) != 0:
                box["error"] = _os_error("unshare")
                return
            try:
                _mount("/proc/thread-self/ns/net", path, _MS_BIND)
            except OSError as exc:
                box["error"] = exc
            finally:
                if _libc.setns(own, _CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen
                    box["error"] = _os_error("setns back")
        finally:
            os.close(own)

    worker = threading.Thread(target=work, name="pycni-netns-add")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]


def create_netns(name: str) -> str:
    """Create the named netns, as ``ip netns add`` would, unless it exists; its path."""
    path = netns_path(name)
    if netns_exists(name):
        return path
    if os.path.lexists(path):
        remove_netns(name)  # the empty file of a namespace whose mount went (see netns_exists)
    _bind_at(path, _bind_new_netns, f"cannot create netns {name}")
    return path


def _bind_at(path: str, bind: Callable[[str], None], failure: str) -> None:
    """The mount point file at ``path`` in the shared /run/netns, and ``bind(path)`` onto it;
    no file is left behind when that fails."""
    try:
        _share_netns_dir()
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            bind(path)
        except OSError:
            os.unlink(path)
            raise
    except OSError as exc:
        raise NetlinkFailure(f"{failure}: {exc.strerror or exc}") from exc


def pin_netns(source: str, name: str) -> str:
    """Hold the namespace at ``source`` (``/proc/PID/ns/net``) open under the name ``name``, as
    Docker pins its sandboxes: it lives on after its last process, until :func:`remove_netns`.
    The path; a pin of that name holding the same namespace already is fine."""
    path = netns_path(name)
    try:
        wanted = os.stat(source).st_ino
    except OSError as exc:
        raise NetlinkFailure(f"cannot pin {source}: {exc.strerror}") from exc
    if is_netns(path):
        if os.stat(path).st_ino == wanted:
            return path
        raise NetlinkFailure(f"cannot pin {source} as {name}: that name holds another namespace")
    _bind_at(path, lambda at: _mount(source, at, _MS_BIND), f"cannot pin {source} as {name}")
    return path


def remove_netns(name: str) -> None:
    """Remove the named netns; already gone is fine (DEL semantics)."""
    path = netns_path(name)
    if not os.path.exists(path):
        return
    if _libc.umount2(path.encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: not mounted (an empty file left by a crash)
            raise NetlinkFailure(f"cannot remove netns {name}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NetlinkFailure(f"cannot remove netns {name}: {exc.strerror}") from exc


_NSFS_MAGIC = 0x6E736673
_STATFS_SIZE = 256  # struct statfs is 120 bytes on 64-bit Linux; f_type comes first


def is_netns(path: str) -> bool:
    """Whether ``path`` is a network namespace: a file with nsfs mounted on it.

    ``os.path.exists`` is not enough: when a mount namespace that bound it goes away (a managed
    plugin stopped by Docker), the mount point's empty file stays behind in /run/netns.
    """
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.statfs(path.encode(), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value == _NSFS_MAGIC


def netns_exists(name: str) -> bool:
    return is_netns(netns_path(name))


def list_netns(prefix: str = "") -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


