"""``pycni watch``: the controller of the ``--network none`` mode, on Docker's event stream.

A container started with ``--network none`` and the label ``pycni.networks=NET[,NET…]`` is
attached to those conflists (eth0, eth1, …) by the controller, as ``pycni attach`` would
(:class:`shim.containers.Containers`): ``pycni.ports`` (comma-separated
``[HOSTIP:]HOST:CONT[/PROTO]``) and ``pycni.ip`` go to the first network, ``pycni.args``
(``K=V;K=V``) and ``pycni.caps`` (a JSON object) to each (:mod:`shim.podargs`).

One rule decides everything (:meth:`Watch.converge`), whatever the event was: Docker's view of
the container against pycni's records of it.

* labelled and running, nothing recorded: ADD each network (a failure part-way DELs what this
  round attached: no half attachment; the error, naming the plugin, is logged and kept where
  ``pycni ls`` shows it until an attempt succeeds — at the container's next start or the
  controller's next resync — or the container goes);
* labelled and running, recorded with another pid: the container restarted, its namespace is
  new: DEL what is recorded, then ADD again (never "duplicate allocation");
* not running, or gone: DEL what is recorded;
* a running container without the label is not the controller's (``pycni attach``'s own).

Events (``start``, ``die``, ``destroy``, ``restart``…) only say *which* container to converge.
Work for one container never runs twice at once, and an event arriving while it runs makes it
run once more after (:class:`Serial`), so the last event is always followed by a convergence on
Docker's state after it; different containers converge in parallel, ``workers`` at most.

On start, and whenever the stream was lost (reconnecting with a bounded backoff), the controller
resyncs: it opens the stream first, then converges every labelled container and every container
pycni has a record of (Docker replays only recent events). SIGTERM and SIGINT stop it: no new
work, the running work finishes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from . import dockerview, podargs
from .containers import Containers
from .errors import InvalidRequest, NotFound, PycniError
from .none_io import Request, parse_port
from .state import ContainerRecord, FailureRecord

log = logging.getLogger(__name__)

NETWORKS = "pycni.networks"
PORTS = "pycni.ports"
IP = "pycni.ip"
ARGS = "pycni.args"
CAPS = "pycni.caps"


def requests(labels: dict[str, str]) -> list[Request]:
    """What the labels ask for, one request per network; [] without ``pycni.networks``.
    Raises InvalidRequest for a label that doesn't parse."""
    nets = [n.strip() for n in labels.get(NETWORKS, "").split(",") if n.strip()]
    if not nets:
        return []
    bindings = tuple(parse_port(p.strip()) for p in labels.get(PORTS, "").split(",") if p.strip())
    args = podargs.parse(labels.get(ARGS, ""), f"label {ARGS}")
    caps = podargs.parse_caps(labels.get(CAPS, ""), f"label {CAPS}")
    ip = labels.get(IP, "").strip()
    return [Request(net, f"eth{n}", ip if n == 0 else "", bindings if n == 0 else (), args,
                    caps=dict(caps)) for n, net in enumerate(nets)]


class Source(Protocol):
    """Docker, as the controller reads it (:mod:`shim.dockerview`; a fake in unit tests)."""

    def labelled(self) -> set[str]: ...

    def events(self) -> contextlib.AbstractContextManager[Iterator[tuple[str, str]]]: ...


class DockerSource:
    """``recorded(cid)``: whether pycni has attachments of an unlabelled container (pycni run,
    pycni attach), whose events matter too."""

    def __init__(self, recorded: Callable[[str], bool] = lambda cid: False) -> None:
        self.recorded = recorded

    def labelled(self) -> set[str]:
        return dockerview.labelled(NETWORKS)

    def events(self) -> contextlib.AbstractContextManager[Iterator[tuple[str, str]]]:
        return dockerview.container_events(NETWORKS, also=self.recorded)


class Serial:
    """Runs ``work(key)`` on a bounded pool: never twice at once for one key; a key submitted
    while its work runs runs once more after it."""

    def __init__(self, work: Callable[[str], None], workers: int = 8) -> None:
        self._work = work
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pycni-watch")
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._idle = threading.Condition(self._lock)

    def submit(self, key: str) -> None:
        with self._lock:
            if key in self._busy:
                self._again.add(key)
                return
            self._busy.add(key)
        self._pool.submit(self._run, key)

    def _run(self, key: str) -> None:
        while True:
            try:
                self._work(key)
            except Exception:  # one container's failure never stops the others
                log.exception("pycni watch: container %s", key[:12])
            with self._lock:
                if key in self._again:
                    self._again.discard(key)
                    continue
                self._busy.discard(key)
                self._idle.notify_all()
                return

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing runs or waits (within ``timeout`` seconds)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._busy, timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Watch:
    def __init__(self, containers: Containers, source: Source | None = None,
                 workers: int = 8) -> None:
        self.containers = containers
        self.source: Source = source or DockerSource(
            recorded=lambda cid: bool(containers.records(cid)))
        self.serial = Serial(self.converge, workers)
        self.stopping = threading.Event()
        #: labelled containers on a Docker network, said once each
        self._ignored: set[str] = set()

    def converge(self, cid: str) -> None:
        """Bring the container's attachments in line with Docker's view of it (see the module)."""
        try:
            found: dockerview.Target | None = self.containers.docker.target(cid)
        except NotFound:
            found = None
        if found is None:
            self._ignored.discard(cid)  # gone: nothing more to say of it
        labelled = found is not None and NETWORKS in found.labels
        if found is not None and labelled and found.network_mode not in ("none", ""):
            if cid not in self._ignored:
                self._ignored.add(cid)
                log.warning("pycni watch: %s has the label %s but is on Docker's network %r, "
                            "not --network none: ignored (pycni wires only containers started "
                            "with --network none)", _who(cid, found), NETWORKS,
                            found.network_mode)
            return
        recs = self.containers.records(cid)
        pid = found.pid if found is not None and found.running else 0
        live = found is not None and pid > 0
        # Attachments follow their container, whoever made them (the labels, pycni run or
        # pycni attach): a container that stopped, restarted or went loses them.
        if recs and (not live or any(r.pid != pid for r in recs)):
            why = "is gone" if found is None else "is not running" if not live else "restarted"
            for rec in self.containers.detach_all(cid):
                log.info("pycni watch: %s %s: detached %s/%s", _who(cid, found), why,
                         rec.network, rec.ifname)
            recs = []
        store = self.containers.store
        if not live or found is None:
            store.delete_failure(cid)
            return
        if not labelled:
            return  # pycni attach's or pycni run's: not the labels' to wire
        try:
            wanted = requests(found.labels)
        except InvalidRequest as exc:
            log.error("pycni watch: %s: labels: %s", _who(cid, found), exc)
            store.save_failure(FailureRecord(cid, found.labels.get(NETWORKS, ""),
                                             f"labels: {exc}", found.name))
            return
        have = {(r.network, r.ifname) for r in recs}
        done: list[ContainerRecord] = []
        for req in wanted:
            if (req.network, req.ifname) in have:
                continue
            try:
                rec = self.containers.attach(cid, req)
            except PycniError as exc:
                log.error("pycni watch: %s: attaching %s failed: %s", _who(cid, found),
                          req.network, exc)
                for prev in reversed(done):  # no half attachment: all the labels ask, or none
                    with contextlib.suppress(PycniError):
                        self.containers.detach(cid, prev.network, prev.ifname)
                # where a user looks (pycni ls) until an attempt succeeds or the container goes
                store.save_failure(FailureRecord(cid, req.network, str(exc), found.name))
                return
            done.append(rec)
            addrs = ",".join(str(ip.address) for ip in rec.attachment.ips()) or "-"
            log.info("pycni watch: %s: attached %s as %s (%s)", _who(cid, found), req.network,
                     req.ifname, addrs)
        store.delete_failure(cid)

    def resync(self) -> None:
        """Converge every labelled container and every container pycni has a record of."""
        store = self.containers.store
        known = {r.container_id for r in self.containers.records()}
        known |= {f.container_id for f in store.failures()}
        for cid in sorted(self.source.labelled() | known):
            self.serial.submit(cid)

    def follow(self, max_backoff: float = 10.0) -> None:
        """Open the stream, resync, hand each event on; again after the stream is lost, waiting
        0.5 s, 1 s, 2 s … ``max_backoff`` between tries. Returns once :attr:`stopping` is set
        (the stream may still be open: the caller's thread is then a daemon's)."""
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with self.source.events() as events:
                    self.resync()
                    backoff = 0.5
                    for cid, action in events:
                        if self.stopping.is_set():
                            return
                        log.debug("pycni watch: %s %s", cid[:12], action)
                        self.serial.submit(cid)
                log.warning("pycni watch: Docker's event stream ended; reconnecting")
            except PycniError as exc:
                log.warning("pycni watch: Docker's event stream lost (%s); reconnecting in "
                            "%.1fs", exc, backoff)
            except Exception:  # the controller keeps following whatever one round raised
                log.exception("pycni watch: following Docker's events failed; again in %.1fs",
                              backoff)
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, max_backoff)

    def run(self) -> None:
        """Follow the stream in a daemon thread until :attr:`stopping` is set, then let the
        running work finish."""
        thread = threading.Thread(target=self.follow, name="pycni-watch-events", daemon=True)
        thread.start()
        try:
            while not self.stopping.wait(1.0):
                pass
        finally:
            self.stopping.set()
            self.serial.close()


def _who(cid: str, found: dockerview.Target | None) -> str:
    return f"container {found.name if found is not None else cid[:12]}"
