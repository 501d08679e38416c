"""An in-memory stand-in for :mod:`shim.netlink`: namespaces holding links, and nothing real.

``Driver(settings, links=FakeLinks())`` runs the staging-namespace dance without root. The fake
keeps what the kernel keeps — which namespace holds which link, its MAC, addresses and routes,
which bridge a port is enslaved to, which veth is whose peer — so a test can assert what exists
afterwards ("no staging netns, no ``pcn*`` link, the bridge has no ports"), and it can be told to
fail any one operation::

    links = FakeLinks()
    links.fail["move_to_host"] = NetlinkFailure("cannot move eth0")

Three kinds of actor change the model, each through its own door:

* **the driver**, through the functions :mod:`shim.netlink` exports (recorded in :attr:`calls`,
  subject to :attr:`fail`), with the same edge cases: deleting twice is ``False``, a missing
  namespace is ``NetlinkFailure`` where the real one opens a socket in it, and so on;
* **CNI plugins**, through :class:`FakeMainPlugin`, whose ``add``/``delete`` are
  :class:`tests.fakes.FakeExec` behaviours that create and delete links as bridge, ptp or
  macvlan would (its ADD answers an ``eth0`` whose ``sandbox`` is ``CNI_NETNS``);
* **Docker**, through :meth:`FakeLinks.docker_join`, :meth:`FakeLinks.docker_leave` and
  :meth:`FakeLinks.destroy_namespace` (a container's netns dying with its link in it).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shim import netlink
from shim.cni.types import Route
from shim.dnat import PortRule
from shim.errors import CNIError, NetlinkFailure
from shim.state import NetworkRules
from tests.fakes import FakeExec, cni_args, requested_addresses

HOST = ""  # the host namespace's key in :attr:`FakeLinks.spaces`
NETNS_DIR = "/run/netns"


@dataclass(eq=False)
class Link:
    """One link as the kernel sees it. Identity matters: a veth's ``peer`` is the other object."""

    name: str
    mac: str
    kind: str = "veth"  # veth | bridge | macvlan
    addresses: list[str] = field(default_factory=list)
    #: the main-table routes through this link, as :func:`shim.netlink.move_to_host` reports them
    routes: list[dict[str, str]] = field(default_factory=list)
    #: the bridge (in the same namespace) this link is a port of
    master: str = ""
    up: bool = False
    peer: Link | None = field(default=None, repr=False)


def on_link_routes(addresses: Iterable[str]) -> list[dict[str, str]]:
    """The prefix routes the kernel adds with each address (none for a /32 or /128)."""
    routes = []
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        if iface.network.prefixlen != iface.max_prefixlen:
            routes.append({"dst": str(iface.network), "gw": ""})
    return routes


@dataclass
class FakeLinks:
    #: namespace key ("" = host; a staging netns by name; a Docker sandbox by path) → links
    spaces: dict[str, dict[str, Link]] = field(default_factory=lambda: {HOST: {}})
    #: operation name → the exception that operation raises (until removed)
    fail: dict[str, BaseException] = field(default_factory=dict)
    #: every shim.netlink function the driver called: (name, args)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    _macs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _veths: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    #: the type link_info and move_to_host return, as shim.netlink.LinkInfo
    LinkInfo = netlink.LinkInfo

    # --- bookkeeping -----------------------------------------------------------------------------

    def _enter(self, op: str, *args: Any) -> None:
        self.calls.append((op, args))
        if op in self.fail:
            raise self.fail[op]

    def ops(self) -> list[str]:
        """The names of the operations the driver called, in order."""
        return [op for op, _ in self.calls]

    @staticmethod
    def _key(ns: str | None) -> str:
        if not ns:
            return HOST
        prefix = NETNS_DIR + "/"
        return ns.removeprefix(prefix)

    def _space(self, ns: str | None, what: str) -> dict[str, Link]:
        key = self._key(ns)
        if key not in self.spaces:
            raise NetlinkFailure(f"{what}: netns {ns} does not exist")
        return self.spaces[key]

    def new_mac(self) -> str:
        high, low = divmod(next(self._macs), 256)
        return f"02:42:00:00:{high:02x}:{low:02x}"

    def find(self, ns: str | None, name: str) -> Link | None:
        """The link called ``name`` in ``ns`` (a name, a path, or None for the host)."""
        return self.spaces.get(self._key(ns), {}).get(name)

    def where(self, link: Link) -> tuple[str, str] | None:
        """(namespace key, name) of ``link``, or None if it no longer exists."""
        for key, space in self.spaces.items():
            for name, candidate in space.items():
                if candidate is link:
                    return key, name
        return None

    def host_links(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.spaces[HOST] if n.startswith(prefix))

    def all_links(self) -> dict[str, list[str]]:
        """Every namespace's link names; what a test compares before and after."""
        return {key: sorted(space) for key, space in self.spaces.items()}

    # --- what plugins and the kernel do ----------------------------------------------------------

    def add_link(
        self,
        name: str,
        ns: str | None = None,
        *,
        kind: str = "veth",
        mac: str = "",
        addresses: Iterable[str] = (),
        routes: Iterable[dict[str, str]] | None = None,
        master: str = "",
    ) -> Link:
        """Create a link (as a plugin would); its namespace must exist, its name must be free."""
        space = self._space(ns, f"cannot add {name}")
        if name in space:
            raise NetlinkFailure(f"cannot add {name}: file exists")
        addresses = list(addresses)
        link = Link(
            name=name,
            mac=mac.lower() or self.new_mac(),
            kind=kind,
            addresses=addresses,
            routes=list(on_link_routes(addresses) if routes is None else routes),
            master=master,
            up=True,
        )
        space[name] = link
        return link

    def add_veth(self, name: str, ns: str | None, peer_name: str,
                 peer_ns: str | None = None, **attrs: Any) -> tuple[Link, Link]:
        """A veth pair: ``name`` in ``ns`` (with ``attrs``), ``peer_name`` in ``peer_ns``."""
        master = attrs.pop("peer_master", "")
        inner = self.add_link(name, ns, **attrs)
        outer = self.add_link(peer_name, peer_ns, master=master)
        inner.peer, outer.peer = outer, inner
        return inner, outer

    def add_namespace(self, ns: str) -> None:
        """A namespace pycni doesn't own (a Docker sandbox, by path)."""
        self.spaces.setdefault(self._key(ns), {})

    def _destroy(self, link: Link) -> None:
        """Delete a link as the kernel does: its veth peer goes too, a bridge frees its ports."""
        for candidate in (link, link.peer):
            if candidate is None:
                continue
            found = self.where(candidate)
            if found is None:
                continue
            key, name = found
            del self.spaces[key][name]
            if candidate.kind == "bridge":
                for port in self.spaces[key].values():
                    if port.master == name:
                        port.master = ""

    def _move(self, link: Link, to: str | None, new_name: str) -> None:
        """Change a link's namespace: the kernel drops its addresses and routes, and downs it."""
        found = self.where(link)
        assert found is not None
        space = self._space(to, f"cannot move {link.name}")
        if new_name in space:
            raise NetlinkFailure(f"cannot move {link.name} as {new_name}: file exists")
        del self.spaces[found[0]][found[1]]
        link.name, link.addresses, link.routes = new_name, [], []
        link.master, link.up = "", False
        space[new_name] = link

    def _set_addresses(self, link: Link, addresses: Iterable[str]) -> None:
        link.addresses = list(addresses)
        link.routes = on_link_routes(link.addresses)
        link.up = True

    # --- what Docker does ------------------------------------------------------------------------

    def docker_join(self, host_name: str, sandbox: str, *, prefix: str = "eth",
                    addresses: Iterable[str] = (), mac: str = "") -> str:
        """Docker's Join: move ``host_name`` into ``sandbox`` as ``<prefix>N`` with its
        addresses (and ``--mac-address``); returns the name it got there."""
        link = self.find(None, host_name)
        if link is None:
            raise AssertionError(f"docker_join: no host link {host_name}")
        self.add_namespace(sandbox)
        taken = self.spaces[self._key(sandbox)]
        name = next(f"{prefix}{n}" for n in itertools.count() if f"{prefix}{n}" not in taken)
        self._move(link, sandbox, name)
        if mac:
            link.mac = mac.lower()
        self._set_addresses(link, addresses)
        return name

    def docker_leave(self, sandbox: str, name: str, host_name: str) -> None:
        """Docker releasing a sandbox: the link goes back to the host under its SrcName."""
        link = self.find(sandbox, name)
        if link is None:
            raise AssertionError(f"docker_leave: no link {name} in {sandbox}")
        self._move(link, None, host_name)

    def destroy_namespace(self, ns: str) -> None:
        """A namespace disappears with its links (and their veth peers, wherever they are)."""
        key = self._key(ns)
        for link in list(self.spaces.get(key, {}).values()):
            self._destroy(link)
        self.spaces.pop(key, None)

    # --- the shim.netlink functions the driver calls ---------------------------------------------

    def netns_path(self, name: str) -> str:
        return f"{NETNS_DIR}/{name}"

    def create_netns(self, name: str) -> str:
        self._enter("create_netns", name)
        self.spaces.setdefault(name, {})
        return self.netns_path(name)

    def remove_netns(self, name: str) -> None:
        self._enter("remove_netns", name)
        self.destroy_namespace(name)

    def netns_exists(self, name: str) -> bool:
        self._enter("netns_exists", name)
        return name != HOST and "/" not in name and name in self.spaces

    def list_netns(self, prefix: str = "") -> list[str]:
        self._enter("list_netns", prefix)
        return sorted(k for k in self.spaces if k and "/" not in k and k.startswith(prefix))

    def link_info(self, name: str, ns: str | None = None) -> netlink.LinkInfo | None:
        self._enter("link_info", name, ns)
        link = self._space(ns, f"cannot look up link {name}").get(name)
        return None if link is None else netlink.LinkInfo(name=name, mac=link.mac, mtu=1500,
                                                          kind=link.kind)

    def link_names(self, ns: str | None = None) -> list[str]:
        self._enter("link_names", ns)
        return list(self._space(ns, "cannot list links"))

    def move_to_host(self, ns_name: str, ifname: str, host_name: str
                     ) -> tuple[netlink.LinkInfo, list[Route]]:
        self._enter("move_to_host", ns_name, ifname, host_name)
        link = self._space(ns_name, f"cannot move {ifname} out of {ns_name}").get(ifname)
        if link is None:
            raise NetlinkFailure(f"the CNI chain created no interface {ifname} in {ns_name}")
        routes = [Route.from_json(r) for r in link.routes]
        self._move(link, None, host_name)
        return netlink.LinkInfo(name=host_name, mac=link.mac, mtu=1500), routes

    def delete_link(self, name: str, ns: str | None = None, *,
                    macs: Collection[str] = ()) -> bool:
        self._enter("delete_link", name, ns)
        if ns and self._key(ns) not in self.spaces:
            return False
        link = self._space(ns, f"cannot delete link {name}").get(name)
        if link is None or (macs and link.mac.lower() not in macs):
            return False
        self._destroy(link)
        return True

    def delete_by_mac(self, ns: str, mac: str) -> bool:
        self._enter("delete_by_mac", ns, mac)
        for link in list(self.spaces.get(self._key(ns), {}).values()):
            if link.mac.lower() == mac.lower():
                self._destroy(link)
                return True
        return False

    def restore_for_delete(self, ns_name: str, ifname: str, *, host_name: str, mac: str,
                           addresses: Iterable[str], sandbox: str = "") -> str:
        """As the real one: staging, else the host under ``host_name`` (same MAC), else the
        sandbox (by MAC), else a veth stand-in; the link ends up as ``ifname`` with
        ``addresses``. Returns where it was found."""
        self._enter("restore_for_delete", ns_name, ifname, host_name, mac, sandbox)
        what = f"cannot restore {ifname} into {ns_name}"
        staging = self._space(ns_name, what)
        if ifname in staging:
            return "staging"
        link = self.find(None, host_name)
        found = "host"
        if link is not None and mac and link.mac.lower() != mac.lower():
            link = None  # same name, not our link: leave it alone
        if link is None and sandbox and mac and self._key(sandbox) in self.spaces:
            link = next((k for k in self.spaces[self._key(sandbox)].values()
                         if k.mac.lower() == mac.lower()), None)
            found = "sandbox"
        if link is None:
            link, _ = self.add_veth(ifname, ns_name, "pycni-standin", ns_name)
            found = "stand-in"
        else:
            self._move(link, ns_name, ifname)
        self._set_addresses(link, addresses)
        return found

    def bridge_ports(self, name: str) -> list[str]:
        self._enter("bridge_ports", name)
        if name not in self.spaces[HOST]:
            return []
        return sorted(n for n, link in self.spaces[HOST].items() if link.master == name)

    def addresses(self, ns: str, ifname: str) -> tuple[str, list[str]]:
        self._enter("addresses", ns, ifname)
        link = self.find(ns, ifname)
        return ("", []) if link is None else (link.mac, list(link.addresses))

    def is_netns(self, path: str) -> bool:
        self._enter("is_netns", path)
        return bool(path) and self._key(path) in self.spaces

    def hand_over_default_routes(self, ns: str, ifname: str) -> list[Route]:
        self._enter("hand_over_default_routes", ns, ifname)
        link = self._space(ns, f"cannot read routes of {ifname} in {ns}").get(ifname)
        if link is None:
            raise NetlinkFailure(f"the CNI chain created no interface {ifname} in {ns}")
        routes = [Route.from_json(r) for r in link.routes]
        link.routes = [r for r, parsed in zip(link.routes, routes, strict=True)
                       if not parsed.is_default]
        return routes


@dataclass
class DelSeen:
    """What a fake plugin's DEL found in the namespace: the link and its addresses, or nothing."""

    netns: str
    ifname: str
    mac: str
    addresses: list[str]
    prev_result: dict[str, Any] | None


@dataclass
class FakeMainPlugin:
    """A main plugin over :class:`FakeLinks`, as :class:`~tests.fakes.FakeExec` behaviours.

    ``kind`` is what it imitates:

    * ``bridge``: a veth whose host end is a port of ``stdin["bridge"]`` (default ``cni0``,
      created on first use, as the real plugin does); addresses with their on-link routes;
    * ``ptp``: a veth whose host end is on no bridge; like the real ptp, the container's on-link
      route of its subnet is replaced by a host route to the gateway and the subnet via it;
    * ``macvlan``: one link in the namespace, nothing on the host.

    Addresses come from :func:`~tests.fakes.requested_addresses` (``ips`` capability, CNI_ARGS
    ``IP=``, static ``addresses``), else host-local-style from the IPAM's subnet; ``force`` makes
    it assign given addresses whatever it was asked. ``honour_mac`` is whether it applies
    CNI_ARGS ``MAC=`` / the ``mac`` capability (bridge does, ptp doesn't). Routes in the result
    and in the namespace are the IPAM's ``routes``, with the gateway filled in as
    ``ipam.ConfigureIface`` does.
    """

    links: FakeLinks
    kind: str = "bridge"
    honour_mac: bool = True
    force: Sequence[str] | None = None
    #: what every DEL found, in order
    deletes: list[DelSeen] = field(default_factory=list)
    #: host-local's store: container id → addresses it holds
    leases: dict[str, list[str]] = field(default_factory=dict)

    def install(self, fake: FakeExec, plugin: str | None = None) -> FakeMainPlugin:
        """Answer ADD and DEL of ``plugin`` (default: ``kind``) in ``fake``; returns self."""
        fake.on(plugin or self.kind, "ADD", self.add)
        fake.on(plugin or self.kind, "DEL", self.delete)
        return self

    # --- IPAM ------------------------------------------------------------------------------------

    @staticmethod
    def _subnets(ipam: Mapping[str, Any]) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        for rangeset in ipam.get("ranges") or []:
            found.extend(r for r in rangeset if isinstance(r, dict) and "subnet" in r)
        if "subnet" in ipam:
            found.append({"subnet": ipam["subnet"], "gateway": ipam.get("gateway", "")})
        return found

    def _ranges(self, ipam: Mapping[str, Any]) -> list[dict[str, str]]:
        """Where the IPAM hands out from: its subnets, else (an IPAM with none in its config,
        such as dhcp) 10.200.99.0/24."""
        return self._subnets(ipam) or [{"subnet": "10.200.99.0/24"}]

    def _allocate(self, ipam: Mapping[str, Any], container_id: str) -> list[str]:
        ranges = self._ranges(ipam)
        subnet = ipaddress.ip_network(ranges[0]["subnet"])
        gateway = ranges[0].get("gateway") or str(next(subnet.hosts()))
        held = {a.split("/")[0] for addrs in self.leases.values() for a in addrs}
        for host in subnet.hosts():
            if str(host) != gateway and str(host) not in held:
                return [f"{host}/{subnet.prefixlen}"]
        raise CNIError(f"no IP addresses available in range set: {subnet}", code=11)

    def _with_prefix(self, address: str, ipam: Mapping[str, Any]) -> str:
        if "/" in address:
            return address
        ip = ipaddress.ip_address(address)
        for r in self._subnets(ipam):
            net = ipaddress.ip_network(r["subnet"])
            if ip in net:
                return f"{ip}/{net.prefixlen}"
        return f"{ip}/{ip.max_prefixlen}"

    def _gateways(self, stdin: Mapping[str, Any], env: Mapping[str, str],
                  addresses: Sequence[str]) -> dict[str, str]:
        """address → its gateway, as the IPAM would report it."""
        ipam = stdin.get("ipam") or {}
        explicit = {str(a.get("address")): str(a.get("gateway") or "")
                    for a in ipam.get("addresses") or [] if isinstance(a, dict)}
        arg_gws = [g for g in cni_args(env).get("GATEWAY", "").split(",") if g]
        out = {}
        for address in addresses:
            iface = ipaddress.ip_interface(address)
            gw = explicit.get(address) or next(
                (g for g in arg_gws if ipaddress.ip_address(g).version == iface.version), "")
            if not gw and ipam.get("type") in ("host-local", "dhcp"):  # dhcp: the router option
                for r in self._ranges(ipam):
                    net = ipaddress.ip_network(r["subnet"])
                    if iface.ip in net:
                        gw = r.get("gateway") or str(next(net.hosts()))
            out[address] = gw
        return out

    # --- the verbs -------------------------------------------------------------------------------

    def add(self, stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        netns, ifname, cid = env["CNI_NETNS"], env["CNI_IFNAME"], env["CNI_CONTAINERID"]
        if self.links._key(netns) not in self.links.spaces:
            raise CNIError(f"failed to open netns {netns!r}: no such file or directory", code=5)
        if self.links.find(netns, ifname) is not None:
            raise CNIError(f"container veth name provided ({ifname}) already exists", code=4)
        ipam = stdin.get("ipam") or {}
        addresses = [self._with_prefix(a, ipam)
                     for a in (self.force or requested_addresses(stdin, env))]
        if not addresses and ipam:
            addresses = self._allocate(ipam, cid)
        if ipam.get("type") == "host-local":
            self.leases[cid] = addresses
        gateways = self._gateways(stdin, env, addresses)
        runtime = stdin.get("runtimeConfig") or {}
        mac = (cni_args(env).get("MAC") or runtime.get("mac") or "") if self.honour_mac else ""
        result_routes = [dict(r) for r in ipam.get("routes") or []]
        live = self._live_routes(addresses, gateways, result_routes)
        interfaces: list[dict[str, Any]] = []
        if self.kind == "macvlan":
            inner = self.links.add_link(ifname, netns, mac=mac, addresses=addresses, routes=live,
                                        kind="macvlan")
        else:
            master = ""
            if self.kind == "bridge":
                master = str(stdin.get("bridge") or "cni0")
                bridge = self.links.find(None, master) or self.links.add_link(master,
                                                                             kind="bridge")
                interfaces.append({"name": master, "mac": bridge.mac})
            host_end = f"veth{next(self.links._veths):08x}"
            inner, outer = self.links.add_veth(ifname, netns, host_end, None, mac=mac,
                                               addresses=addresses, routes=live,
                                               peer_master=master)
            interfaces.append({"name": host_end, "mac": outer.mac})
        interfaces.append({"name": ifname, "mac": inner.mac, "sandbox": netns})
        ips = []
        for address in addresses:
            ip: dict[str, Any] = {"address": address, "interface": len(interfaces) - 1}
            if gateways.get(address):
                ip["gateway"] = gateways[address]
            if stdin["cniVersion"].startswith("0.3"):
                ip["version"] = str(ipaddress.ip_interface(address).version)
            ips.append(ip)
        result = {"cniVersion": stdin["cniVersion"], "interfaces": interfaces, "ips": ips,
                  "routes": result_routes, "dns": {}}
        return json.dumps(result).encode()

    def _live_routes(self, addresses: Sequence[str], gateways: Mapping[str, str],
                     result_routes: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        live: list[dict[str, str]] = []
        for address in addresses:
            iface = ipaddress.ip_interface(address)
            gw = gateways.get(address, "")
            if self.kind == "ptp" and gw:
                live.append({"dst": f"{gw}/{iface.max_prefixlen}", "gw": ""})
                live.append({"dst": str(iface.network), "gw": gw})
            else:
                live.extend(on_link_routes([address]))
        for route in result_routes:
            dst = ipaddress.ip_network(route["dst"])
            gw = route.get("gw") or next(
                (g for a, g in gateways.items()
                 if g and ipaddress.ip_interface(a).version == dst.version), "")
            live.append({"dst": str(dst), "gw": gw})
        return live

    def delete(self, stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        netns, ifname = env["CNI_NETNS"], env["CNI_IFNAME"]
        link = self.links.find(netns, ifname) if netns else None
        self.deletes.append(DelSeen(
            netns=netns,
            ifname=ifname,
            mac=link.mac if link else "",
            addresses=list(link.addresses) if link else [],
            prev_result=stdin.get("prevResult"),
        ))
        if link is not None:
            self.links._destroy(link)
        self.leases.pop(env["CNI_CONTAINERID"], None)
        return b""


@dataclass
class FakeRules:
    """An in-memory stand-in for :mod:`shim.firewall`: which networks have their rules.

    A network's entry holds what it was added with; ``icc`` and ``masquerade`` only when they
    are off (Docker's ``enable_icc``/``enable_ip_masquerade=false``), as a network record keeps
    them.
    """

    networks: dict[str, dict[str, object]] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)
    #: the tags with a loopback guard (:func:`shim.firewall.add_guard`)
    guards: set[str] = field(default_factory=set)
    #: interfaces whose route_localnet was put back to 0
    closed: list[str] = field(default_factory=list)
    #: an endpoint's tag → its published ports' DNAT rules
    dnat: dict[str, list[PortRule]] = field(default_factory=dict)

    def add_network(self, network_id: str, spec: NetworkRules) -> None:
        if "add_network" in self.fail:
            raise self.fail["add_network"]
        self.networks[network_id] = spec.to_json()

    def remove_network(self, network_id: str, spec: NetworkRules) -> None:
        self.networks.pop(network_id, None)

    def add_guard(self, tag: str) -> None:
        if "add_guard" in self.fail:
            raise self.fail["add_guard"]
        self.guards.add(tag)

    def remove_guard(self, tag: str) -> None:
        self.guards.discard(tag)

    def close_localnet(self, interfaces: Iterable[str]) -> None:
        self.closed.extend(interfaces)

    def publish(self, tag: str, rules: Iterable[PortRule]) -> None:
        if "publish" in self.fail:
            raise self.fail["publish"]
        self.dnat.setdefault(tag, []).extend(r for r in rules if r not in self.dnat.get(tag, []))

    def restore_published(self, tag: str, rules: Iterable[PortRule]) -> None:
        self.publish(tag, rules)

    def unpublish(self, tag: str, rules: Iterable[PortRule] | None) -> None:
        gone = list(self.dnat.get(tag, []) if rules is None else rules)
        left = [r for r in self.dnat.pop(tag, []) if r not in gone]
        if left:
            self.dnat[tag] = left
