"""The ``--network none`` mode: pycni attaches CNI networks to containers itself.

As Kubernetes' dockershim, cri-dockerd and Nomad do, a container runs with ``--network none`` and
pycni — not Docker — runs a conflist from the conf dir straight into the container's own network
namespace (``/proc/<pid>/ns/net``). No Docker network object and no staging namespace: the
conflist is the network, ``CNI_CONTAINERID`` is the full container id, the interface is ``eth0``
unless told otherwise. This serves what the driver mode can't: sysctls set by ``tuning`` (lost when
a link changes namespace), several interfaces per network, per-container CNI_ARGS, and
Kubernetes-style conflists used as they are.

* :meth:`Containers.attach` — ADD (``pycni attach``); an address through the ``ips`` capability or
  CNI_ARGS ``IP=`` (:mod:`shim.plugins`), published ports through ``portMappings`` (host ports
  chosen as :func:`shim.ports.allocate` does; a taken one is refused), ``--arg`` as CNI_ARGS. A
  failure part-way is undone (the attachment core DELs what succeeded) and names the plugin.
* :meth:`Containers.detach` — DEL with the recorded config and arguments (``pycni detach``);
  succeeds when the container is already gone.
* :meth:`Containers.run` — ``pycni run``: ``docker create --network none``, ``docker start``,
  attach each network (eth0, eth1, …); on failure everything attached is detached and the
  container removed. The guarantee: **the address is in place when ``pycni run`` returns, not
  before the container's main process starts** (the namespace exists only once it runs).
  With a holder (``--holder IMAGE``, as cri-dockerd's pause container) the networks are
  attached to a holder container first and the app is started in its namespace
  (``--network container:<holder>``): **the app starts with its address and keeps it across
  restarts**. The records stay the holder's, naming the app (``app_id``); the holder goes once
  its app is gone and its last attachment is DELed.
* :meth:`Containers.gc` — attachments whose container (or, for a holder, whose app) Docker no
  longer has (``pycni gc``).

Records: one per attachment, ``<state dir>/containers/<container id>.<network>.<ifname>.json``
(:class:`shim.state.ContainerRecord`, written atomically), holding what DEL needs: the config as
ADD ran it, CNI_ARGS, capability args, the netns path, the container id and pid, and the result.
It is written before ADD (so a crash mid-ADD leaves something ``pycni detach`` can undo) and again
with the result. libcni's cache holds the result too, where other CNI tools look for it.

Locks: one ``fcntl`` lock file per container, ``<state dir>/containers/<container id>.lock``, held
for the whole of an attach, detach or gc of that container, so two pycni processes never wire the
same container at once; the last holder removes the file once no record of the container is left.
Choosing host ports takes the lock of the ``containers`` directory itself (ports are one space).

Names: Docker's DNS doesn't know these addresses. When the chain's result has ``dns``, it is
written into the container's resolv.conf (the file Docker bind-mounts, ``ResolvConfPath``); else
containers find each other by address, or through a DNS server the chain names.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import dockerview, firewall, netlink, plugins, ports
from .attach import Attacher, Attachment
from .cni import CNI, find
from .cni.cache import CachedAttachment
from .cni.config import (
    NetworkConfigList,
    conflist_from_dict,
    validate_ifname,
    validate_network_name,
)
from .cni.types import DNS
from .errors import InvalidRequest, NotFound, PycniError
from .seams import Rules
from .settings import Settings
from .state import ContainerRecord, Store

log = logging.getLogger(__name__)


class Docker(Protocol):
    """What this mode asks Docker (:mod:`shim.dockerview`; a fake in unit tests)."""

    def target(self, ref: str) -> dockerview.Target: ...

    def container_ids(self) -> dict[str, str] | None: ...
    def endpoint_names(self) -> dict[str, str]: ...


class RealDocker:
    def __init__(self, driver_name: str = "pycni") -> None:
        self.driver_name = driver_name

    def target(self, ref: str) -> dockerview.Target:
        return dockerview.target(ref)

    def container_ids(self) -> dict[str, str] | None:
        return dockerview.container_ids()

    def endpoint_names(self) -> dict[str, str]:
        """The driver's endpoint ids → the names of their containers ({} if Docker can't say)."""
        found = dockerview.names(self.driver_name).endpoints
        return {eid: c.name.lstrip("/") for eid, c in found.items()}


# --- what the user asks for ----------------------------------------------------------------------

_PORT = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+):(?P<cont>\d+)"
                   r"(?:/(?P<proto>tcp|udp|sctp))?$")


def parse_port(spec: str) -> ports.Binding:
    """``[HOSTIP:]HOST:CONT[/PROTO]`` as a port binding (the host port is fixed)."""
    m = _PORT.match(spec)
    if not m:
        raise InvalidRequest(f"-p {spec!r}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]")
    host_ip = (m.group("ip") or "").strip("[]")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError as exc:
            raise InvalidRequest(f"-p {spec!r}: {host_ip!r} is not an address") from exc
    host, cont = int(m.group("host")), int(m.group("cont"))
    for port in (host, cont):
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"-p {spec!r}: port {port} is out of range")
    return ports.Binding(m.group("proto") or "tcp", cont, host_ip, host, host)


def parse_arg(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or ";" in item:
        raise InvalidRequest(f"--arg {item!r}: expected KEY=VALUE (no ';')")
    return key, value


def address_for(config: NetworkConfigList, ip: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """How ``ip`` reaches the chain's IPAM: the ``ips`` capability, else CNI_ARGS ``IP=``."""
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError as exc:
        raise InvalidRequest(f"--ip {ip!r} is not an address") from exc
    for plugin in config.plugins:
        ipam = plugin.raw.get("ipam")
        if not isinstance(ipam, dict) or not ipam.get("type"):
            continue
        if plugin.capabilities.get("ips"):
            return {"ips": [str(iface) if "/" in ip else str(iface.ip)]}, []
        way = plugins.ip_arg(str(ipam["type"]))
        if way == "bare":
            return {}, [("IP", str(iface.ip))]
        if way == "cidr":
            if "/" not in ip:
                raise InvalidRequest(f"--ip {ip!r}: IPAM {ipam['type']!r} needs a prefix length")
            return {}, [("IP", str(iface))]
        raise InvalidRequest(
            f"--ip: IPAM {ipam['type']!r} of network {config.name!r} takes no address (no 'ips' "
            "capability, no CNI_ARGS IP=)")
    raise InvalidRequest(f"--ip: network {config.name!r} has no IPAM plugin to give it to")


# --- locks ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _flock(path: str, remove_if: Any = None) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path``; when ``remove_if()`` is true at the end, the file
    is removed while still held (a waiter then finds its file gone and locks the new one)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # removed by the holder we waited for: lock the file that is there now
    try:
        yield
    finally:
        try:
            if remove_if is not None and remove_if():
                os.unlink(path)
        finally:
            os.close(fd)


def _dir_lock(path: str) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def held() -> Iterator[None]:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    return held()


# --- resolv.conf ---------------------------------------------------------------------------------


def resolv_conf(dns: DNS) -> str:
    lines = ["# written by pycni from the CNI result's dns"]
    lines += [f"nameserver {ns}" for ns in dns.nameservers]
    search = dns.search or ([dns.domain] if dns.domain else [])
    if search:
        lines.append("search " + " ".join(search))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def write_resolv_conf(path: str, dns: DNS) -> bool:
    """Write ``dns`` into the container's resolv.conf in place (Docker bind-mounts that very
    file: a rename would leave the container the old one). False when there is nothing to say."""
    if not path or not (dns.nameservers or dns.search or dns.domain):
        return False
    try:
        with open(path, "w") as f:
            f.write(resolv_conf(dns))
    except OSError as exc:
        raise PycniError(f"cannot write the container's resolv.conf {path}: {exc.strerror}") from exc
    return True


# --- the mode ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One ``pycni attach``."""

    network: str
    ifname: str = "eth0"
    ip: str = ""
    ports: tuple[ports.Binding, ...] = ()
    args: tuple[tuple[str, str], ...] = ()


class Containers:
    def __init__(self, store: Store, cni: CNI, conf_dir: str, docker: Docker | None = None,
                 proc: str = "/proc", cli: DockerCLI | None = None,
                 rules: Rules = firewall, host: Host = netlink) -> None:
        self.store = store
        #: namespaces and links (pins, a taken interface name, announcements)
        self.host = host
        #: the loopback guard of attachments whose chain may open the host's 127.0.0.0/8
        self.rules = rules
        self.cni = cni
        self.attacher = Attacher(cni)
        self.conf_dir = conf_dir
        self.docker: Docker = docker or RealDocker()
        self.proc = proc
        #: creates, starts and removes containers (pycni run, and holders whose app is gone)
        self.cli = cli or DockerCLI()

    @classmethod
    def from_settings(cls, settings: Settings) -> Containers:
        cni = CNI(list(settings.cni_path), cache_dir=settings.cache_dir,
                  timeout=settings.plugin_timeout)
        return cls(Store(settings.state_dir), cni, settings.conf_dir,
                   RealDocker(settings.driver_name))

    # locks and records

    def locked(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        """The container's lock; its file goes once no record of the container is left."""
        path = os.path.join(self.store.containers_dir(), f"{container_id}.lock")
        return _flock(path, remove_if=lambda: not self.records(container_id))

    def records(self, container_id: str | None = None) -> list[ContainerRecord]:
        return [r for r in self.store.containers()
                if container_id is None or r.container_id == container_id]

    def _find(self, container_id: str, network: str, ifname: str | None) -> list[ContainerRecord]:
        return [r for r in self.records(container_id)
                if r.network == network and (ifname is None or r.ifname == ifname)]

    def resolve(self, ref: str) -> tuple[str, dockerview.Target | None]:
        """The id of the container whose namespace holds ``ref``'s attachments (``ref`` itself,
        or the holder an app of ``pycni run --holder`` joined), and Docker's view of it (None
        once Docker forgot it: then ``ref`` is matched against the records' ids and names)."""
        try:
            found: dockerview.Target | None = self.docker.target(ref)
        except NotFound:
            found = None
        records = self.records()
        if found is not None:
            if any(r.container_id == found.id for r in records):
                return found.id, found
            holders = {r.container_id for r in records if r.app_id == found.id}
            if not holders:
                return found.id, found
        else:
            holders = {r.container_id for r in records
                       if ref in (r.name, r.app_name) or r.container_id.startswith(ref)
                       or (r.app_id and r.app_id.startswith(ref))}
        if len(holders) != 1:
            raise NotFound(f"Docker has no container {ref!r} and pycni has no attachment of "
                           "one by that name")
        holder = holders.pop()
        try:
            return holder, self.docker.target(holder)
        except NotFound:
            return holder, None

    # the verbs

    def attach(self, ref: str, req: Request) -> ContainerRecord:
        validate_network_name(req.network)
        validate_ifname(req.ifname)
        found = self.docker.target(ref)
        if not found.running or not found.pid:
            raise InvalidRequest(f"container {found.name} is not running: it has no namespace "
                                 "to attach to")
        with self.locked(found.id):
            return self._attach_locked(found, req)

    def _attach_locked(self, found: dockerview.Target, req: Request) -> ContainerRecord:
        if self._find(found.id, req.network, req.ifname):
            raise InvalidRequest(
                f"container {found.name} is already attached to {req.network} as {req.ifname}")
        if any(r.ifname == req.ifname for r in self.records(found.id)):
            raise InvalidRequest(f"container {found.name} already has an interface {req.ifname}")
        source = os.path.join(self.proc, str(found.pid), "ns", "net")
        if self.host.link_info(req.ifname, source) is not None:
            raise InvalidRequest(_ifname_taken(found, req.ifname))
        config = find(self.conf_dir, req.network)
        caps: dict[str, Any] = {}
        args = list(req.args)
        if req.ip:
            ip_caps, ip_args = address_for(config, req.ip)
            caps.update(ip_caps)
            args += ip_args
        if args:
            args.insert(0, ("IgnoreUnknown", "1"))
        # The namespace is held open for the attachment's life (as Docker pins its sandboxes):
        # DEL then finds the interface and its addresses even after the container's last
        # process is gone - the bridge plugin removes its masquerade rules only for addresses
        # it finds there - and never touches another process's namespace under a reused pid.
        pin = self.host.pin_netns(source, _pin_name(found.id, source))
        rec = ContainerRecord(
            network=req.network,
            attachment=Attachment(
                container_id=found.id,
                netns=pin,
                ifname=req.ifname,
                config=config,
                cni_args=tuple(args),
                capability_args=caps,
            ),
            name=found.name,
            pid=found.pid,
        )
        with contextlib.ExitStack() as undo:
            undo.callback(self._unpin_unless_used, pin, rec.id, found.id)
            undo.callback(self.store.delete_container, rec.id)
            if plugins.opens_loopback(config):
                # before ADD: portmap opens route_localnet during it (shim.firewall)
                undo.callback(self._unguard, rec)
                self.rules.add_guard(_guard_tag(rec))
            if req.ports:
                if not plugins_with(config, "portMappings"):
                    raise InvalidRequest(f"-p: no plugin of network {req.network!r} declares "
                                         "the portMappings capability (add portmap)")
                with _dir_lock(self.store.containers_dir()):
                    in_use = self._ports_in_use()
                    try:
                        chosen = ports.allocate(req.ports, in_use)
                    except ports.PortInUse as exc:
                        holder = in_use.get(exc.key, "") if exc.key else ""
                        if not holder:
                            raise
                        raise ports.PortInUse(f"{exc}: {holder}", exc.key) from None
                    rec.attachment.capability_args["portMappings"] = [m.to_cni() for m in chosen]
                    self.store.save_container(rec)  # holds the ports from here on
            else:
                self.store.save_container(rec)
            self.attacher.add(rec.attachment, undo)
            self.store.save_container(rec)
            assert rec.attachment.result is not None
            write_resolv_conf(found.resolv_conf, rec.attachment.result.dns)
            undo.pop_all()
        # A container restarted with its address has a new MAC: its neighbours learn it now,
        # not when their entries time out (as Docker's bridge does for its endpoints).
        try:
            self.host.announce(pin, req.ifname, [str(ip.address) for ip in rec.attachment.ips()])
        except PycniError as exc:
            log.warning("%s: announcing %s failed: %s", found.name, req.ifname, exc)
        return rec

    def _ports_in_use(self) -> dict[tuple[str, str, int], str]:
        """Every host port pycni holds, in this mode and the driver's, each → who holds it."""
        used = {}
        endpoints = self.store.endpoints()
        if any(ep.capability_args.get("portMappings") for ep in endpoints):
            names = self.docker.endpoint_names()
            for ep in endpoints:
                container = names.get(ep.id)
                who = (f"container {container} publishes it" if container else
                       f"pycni endpoint {ep.id[:12]} publishes it")
                for m in ep.capability_args.get("portMappings") or []:
                    used[ports.Mapping.from_cni(m).key()] = who
        for rec in self.store.containers():
            for m in rec.attachment.capability_args.get("portMappings") or []:
                used[ports.Mapping.from_cni(m).key()] = (
                    f"container {rec.name or rec.container_id[:12]} publishes it "
                    f"(pycni attach, on {rec.network})")
        return used

    def detach(self, ref: str, network: str, ifname: str | None = None) -> list[ContainerRecord]:
        """DEL the container's attachments to ``network`` (the one on ``ifname`` if given)."""
        container_id, found = self.resolve(ref)
        with self.locked(container_id):
            recs = self._find(container_id, network, ifname)
            if not recs:
                on = f" as {ifname}" if ifname else ""
                raise NotFound(f"container {ref!r} is not attached to {network}{on} by pycni")
            for rec in recs:
                self._delete(rec, found)
            self._remove_holder(container_id, recs)
        return recs

    def detach_all(self, container_id: str) -> list[ContainerRecord]:
        """DEL every attachment of the container (``pycni watch``: it died, restarted or is
        gone); nothing when it has none."""
        try:
            found: dockerview.Target | None = self.docker.target(container_id)
        except NotFound:
            found = None
        with self.locked(container_id):
            recs = self.records(container_id)
            for rec in recs:
                self._delete(rec, found)
        return recs

    def _remove_holder(self, holder: str, recs: Sequence[ContainerRecord],
                       known: dict[str, str] | None = None) -> None:
        """A holder (``pycni run --holder``) goes with its last attachment once its app is gone:
        it exists only to keep the app's namespace."""
        apps = {r.app_id for r in recs if r.app_id}
        if not apps or self.records(holder):
            return
        known = self.docker.container_ids() if known is None else known
        if known is not None and not apps & set(known):
            self.cli.remove(holder)

    def _delete(self, rec: ContainerRecord, found: dockerview.Target | None) -> None:
        att = rec.attachment
        gone = found is None or not found.running or found.pid != rec.pid
        if _is_pin(att.netns):
            if not self.host.is_netns(att.netns):
                att = att.elsewhere("")  # the pin went (a reboot): DEL in no namespace
        elif gone and os.path.exists(att.netns):  # a record of an older pycni: no pin
            # The namespace ADD ran in is gone, and DEL runs with its path all the same (plugins
            # tolerate a missing namespace) - unless another process has taken the pid since:
            # then with none, so no plugin touches that process's namespace.
            att = att.elsewhere("")
        self.attacher.delete(att)
        self.store.delete_container(rec.id)
        self._unguard(rec)
        self._unpin_unless_used(rec.attachment.netns, rec.id, rec.container_id)

    def _unpin_unless_used(self, netns: str, record_id: str, container_id: str) -> None:
        """Let the pinned namespace go once no other attachment uses it."""
        if not _is_pin(netns):
            return
        if any(r.attachment.netns == netns for r in self.records() if r.id != record_id):
            return
        if any(e.netns == netns for e in self.cni.cached_attachments(container_id)):
            return  # an undo that failed part-way: gc's DEL will need it
        self.host.remove_netns(os.path.basename(netns))

    def _unguard(self, rec: ContainerRecord) -> None:
        """Remove the attachment's loopback guard; the last attachment of its network closes
        route_localnet on the network's bridges again."""
        self.rules.remove_guard(_guard_tag(rec))
        if not any(r.network == rec.network for r in self.store.containers() if r.id != rec.id):
            self.rules.close_localnet(plugins.bridges(rec.attachment.config))

    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Attachments whose container Docker no longer has: DEL them. Nothing when Docker
        can't be asked (unknown is not gone)."""
        known = self.docker.container_ids()
        if known is None:
            return []
        done = []
        # a holder whose app is gone counts as gone: it only kept the app's namespace
        gone = {r.container_id for r in self.records()
                if r.container_id not in known or (r.app_id and r.app_id not in known)}
        for cid in sorted(gone):
            with self.locked(cid):
                recs = self.records(cid)
                for rec in recs:
                    who = rec.app_name or rec.name or cid[:12]
                    what = f"attachment {who}/{rec.network}/{rec.ifname}"
                    if dry_run:
                        done.append(f"{what}: its container is gone; removed")
                        continue
                    try:
                        self._delete(rec, None)
                    except PycniError as exc:
                        done.append(f"{what}: its container is gone; failed: {exc}")
                    else:
                        done.append(f"{what}: its container is gone; DEL run")
                if not dry_run:
                    self._remove_holder(cid, recs, known)
        done += self._unrecorded(dry_run)
        for fail in self.store.failures():  # the controller's note of a failed attempt
            if fail.container_id not in known:
                done.append(f"failed attempt {fail.name or fail.container_id[:12]}/"
                            f"{fail.network}: its container is gone; forgotten")
                if not dry_run:
                    self.store.delete_failure(fail.container_id)
        return done

    def _unrecorded(self, dry_run: bool) -> list[str]:
        """libcni cache entries of this mode (ADD ran in a container's ``/proc/PID/ns/net``)
        with no record: an attach whose undo failed part-way (kept so DEL can run again), or
        one that crashed between ADD and its record. DEL them, in no namespace once the pid
        is no longer the one ADD ran in."""
        recorded = {(r.container_id, r.network, r.ifname) for r in self.records()}
        done = []
        for entry in self.cni.cached_attachments():
            pinned = _is_pin(entry.netns)
            if not pinned and not re.fullmatch(re.escape(self.proc) + r"/\d+/ns/net",
                                               entry.netns):
                continue  # the driver's (a staging or sandbox namespace): not this mode's
            if (entry.container_id, entry.network, entry.ifname) in recorded:
                continue
            what = f"CNI attachment {entry.network}/{entry.container_id[:12]}/{entry.ifname}"
            why = f"its undo failed ({entry.undo_failed})" if entry.undo_failed else "no record"
            if dry_run:
                done.append(f"{what}: {why}; removed")
                continue
            with self.locked(entry.container_id):
                try:
                    config = conflist_from_dict(json.loads(entry.config), source="libcni's cache")
                    where = ((entry.netns if self.host.is_netns(entry.netns) else "")
                             if pinned else self._live(entry))
                    att = Attachment(entry.container_id, where, entry.ifname, config,
                                     cni_args=tuple(entry.cni_args),
                                     capability_args=dict(entry.capability_args))
                    self.attacher.delete(att)
                except PycniError as exc:
                    done.append(f"{what}: {why}; failed: {exc}")
                else:
                    done.append(f"{what}: {why}; DEL run")
                    self._unpin_unless_used(entry.netns, "", entry.container_id)
        return done

    def _live(self, entry: CachedAttachment) -> str:
        """The namespace ADD ran in if its container still runs as that pid, else none."""
        try:
            found = self.docker.target(entry.container_id)
        except NotFound:
            return ""
        here = os.path.join(self.proc, str(found.pid), "ns", "net")
        return here if found.running and entry.netns == here and os.path.exists(here) else ""

    def run(self, networks: Sequence[str], docker_args: Sequence[str], *,
            ips: Sequence[str] = (), port_specs: Sequence[ports.Binding] = (),
            holder: Sequence[str] = (), docker_cli: DockerCLI | None = None
            ) -> tuple[str, list[ContainerRecord]]:
        """``pycni run``: create and start with ``--network none``, then attach ``networks``
        (eth0, eth1, …; the i-th ``--ip`` to the i-th network, ports to the first). If any
        attach fails, what was attached is detached, the container removed, and the error
        re-raised saying so.

        With ``holder`` (an image and optionally its command), the networks are attached to a
        holder container started from it, and the app joins the holder's namespace
        (``--network container:``) once its address is there: the app's main process starts
        with its address, and keeps it across restarts.
        """
        if not networks:
            raise InvalidRequest("--cni-net: name at least one network")
        if len(ips) > len(networks):
            raise InvalidRequest("more --ip than --cni-net networks")
        if any(a == "--network" or a.startswith(("--network=", "--net=")) or a == "--net"
               for a in docker_args):
            raise InvalidRequest("pycni run sets --network none itself; leave --network out")
        for net in networks:
            validate_network_name(net)
            find(self.conf_dir, net)  # refuse an unknown network before creating anything
        cli = docker_cli or self.cli
        # the container always runs detached: pycni run returns once it is attached
        create_args = [a for a in docker_args if a not in ("-d", "--detach", "--detach=true")]
        name = _name_in(create_args)
        if holder:
            named = ["--name", f"{name}-pycni-holder"] if name else []
            wired = cli.create(["--network", "none", "--label", "pycni.holder=1", *named,
                                *holder])
        else:
            wired = cli.create(["--network", "none", *create_args])
        created = [wired]
        done: list[ContainerRecord] = []
        try:
            cli.start(wired)
            for n, net in enumerate(networks):
                req = Request(net, f"eth{n}", ips[n] if n < len(ips) else "",
                              tuple(port_specs) if n == 0 else ())
                done.append(self.attach(wired, req))
            app = wired
            if holder:
                app = cli.create(["--network", f"container:{wired}", *create_args])
                created.append(app)
                with self.locked(wired):
                    for rec in done:
                        rec.app_id, rec.app_name = app, name or app[:12]
                        self.store.save_container(rec)
                cli.start(app)
        except PycniError as exc:
            for rec in reversed(done):
                with contextlib.suppress(PycniError):
                    self.detach(wired, rec.network, rec.ifname)
            results = [cli.remove(c) for c in reversed(created)]  # each, whatever the others do
            removed = all(results)
            what = "removed the container" if removed else "could not remove the container"
            exc.message = f"pycni run: {what} {created[-1][:12]}, attaching failed: {exc.message}"
            raise
        return app, done


class Host(Protocol):
    """What this mode asks of the host (:mod:`shim.netlink`; a fake in unit tests)."""

    def pin_netns(self, source: str, name: str) -> str: ...
    def remove_netns(self, name: str) -> None: ...
    def is_netns(self, path: str) -> bool: ...
    def link_info(self, name: str, ns: str | None = None) -> netlink.LinkInfo | None: ...
    def announce(self, ns: str, ifname: str, addresses: Iterable[str]) -> None: ...


#: the names of the namespaces this mode pins: ``pycni-pin-<container 12>-<namespace inode>``
PIN_PREFIX = "pycni-pin-"


def _pin_name(container_id: str, source: str) -> str:
    return f"{PIN_PREFIX}{container_id[:12]}-{os.stat(source).st_ino}"


def _is_pin(netns: str) -> bool:
    return os.path.basename(netns).startswith(PIN_PREFIX) and \
        os.path.dirname(netns) == netlink.NETNS_DIR


def _ifname_taken(found: dockerview.Target, ifname: str) -> str:
    if found.network_mode.startswith("container:"):
        return (f"container {found.name} shares another container's namespace "
                f"(--network {found.network_mode}), which has an interface {ifname} already: "
                "attach to that container instead")
    if found.network_mode not in ("none", ""):
        return (f"container {found.name} is on Docker's network {found.network_mode!r} (not "
                f"--network none), whose interface {ifname} it has already: start it with "
                "--network none for pycni to wire it, or attach beside Docker's with --ifname "
                "eth1")
    return (f"container {found.name} has an interface {ifname} already (not pycni's): choose "
            "another with --ifname")


def _guard_tag(rec: ContainerRecord) -> str:
    return f"none:{rec.container_id[:12]}.{rec.network}.{rec.ifname}"


def _name_in(args: Sequence[str]) -> str:
    """The value of ``--name`` among docker run's arguments ("" if none)."""
    for n, arg in enumerate(args):
        if arg == "--name" and n + 1 < len(args):
            return args[n + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
    return ""


def plugins_with(config: NetworkConfigList, capability: str) -> list[str]:
    return [p.type for p in config.plugins if p.capabilities.get(capability)]


class DockerCLI:
    """The docker CLI for ``pycni run`` (users pass it ``docker run``'s own arguments)."""

    def __init__(self, docker: str = "docker", timeout: float = 120.0) -> None:
        self.docker = docker
        self.timeout = timeout

    def _call(self, *args: str) -> str:
        try:
            proc = subprocess.run([self.docker, *args], capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PycniError(f"docker {args[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise PycniError(f"docker {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def create(self, args: Sequence[str]) -> str:
        return self._call("create", *args).splitlines()[-1]

    def start(self, cid: str) -> None:
        self._call("start", cid)

    def remove(self, cid: str) -> bool:
        try:
            self._call("rm", "-f", cid)
        except PycniError as exc:
            log.error("%s", exc)
            return False
        return True

