"""What pycni must remember across restarts, one small JSON file per record.

Docker sends CreateNetwork once and never again, even after either side restarts, so a network's
record (Docker's request as received, plus the CNI config it resolved to) is the only way a
restarted ``pycni serve`` can serve it. An endpoint's record holds everything DEL needs: the config
ADD ran with, the CNI_ARGS and capability args, the result, and where its links are.

Layout under the state dir (default ``/var/lib/pycni``)::

    networks/<network id>.json     {"version": 1, "kind": "network", ...}
    endpoints/<endpoint id>.json   {"version": 1, "kind": "endpoint", ...}
    containers/<container id>.<network>.<ifname>.json
                                   {"version": 1, "kind": "container", ...}  (--network none mode)

Files are written like libcni's cache: a temp file in the same directory, then ``os.replace``,
mode 0600 — a crash of pycni leaves either the old record or the new one, never half of one.
(No fsync, as libcni: after a power loss the namespaces and links a record describes are gone
too, and reconciliation starts from libcni's cache and the host.)
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .attach import Attachment
from .cni.config import NetworkConfigList, conflist_from_dict
from .cni.types import Result, Route
from .protocol import CreateEndpointRequest, CreateNetworkRequest

VERSION = 1


class Mode(enum.StrEnum):
    #: pycni's own bridge chain (no ``-o cni.network``)
    ZERO_CONFIG = "zero-config"
    #: ``-o cni.network=NAME``: a conflist from the conf dir
    CONFLIST = "conflist"


class Ipam(enum.StrEnum):
    #: Docker's IPAM picks addresses and pycni hands them to the chain
    DOCKER = "docker"
    #: the chain's IPAM picks them (``--ipam-driver null``) and pycni reports them to Docker
    CNI = "cni"


class AddressVia(enum.StrEnum):
    """How Docker's address reaches the chain."""

    CONFIG = "config"  # written into the static IPAM's addresses (zero-config)
    IPS = "ips"  # the ``ips`` runtimeConfig capability
    ARGS = "args"  # CNI_ARGS ``IP=`` (host-local, static)
    NONE = ""  # the chain's IPAM chooses


class Phase(enum.StrEnum):
    """An endpoint's life; a crash leaves the phase it died in, which tells gc what to undo."""

    #: made, its chain not run yet: it runs at Join (see :meth:`shim.driver.Driver.join`)
    CREATED = "created"
    CREATING = "creating"
    READY = "ready"
    JOINED = "joined"
    DELETING = "deleting"


@dataclass(frozen=True)
class NetworkRules:
    """The iptables rules pycni installs for a network of its own chain (:mod:`shim.firewall`):
    Docker's bridge driver's forwarding, masquerading and isolation for ``bridge``'s
    ``subnets``; ``icc`` and ``masquerade`` are Docker's ``enable_icc`` and
    ``enable_ip_masquerade``; ``peers`` and ``peer_subnet`` an overlay's VTEP and range."""

    bridge: str
    subnets: tuple[str, ...] = ()
    internal: bool = False
    icc: bool = True
    masquerade: bool = True
    peers: str = ""
    peer_subnet: str = ""

    def to_json(self) -> dict[str, Any]:
        # only what differs from the defaults, so records keep one shape
        out: dict[str, Any] = {"bridge": self.bridge, "subnets": list(self.subnets),
                               "internal": self.internal}
        out.update({k: False for k in ("icc", "masquerade") if not getattr(self, k)})
        out.update({k: getattr(self, k) for k in ("peers", "peer_subnet") if getattr(self, k)})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkRules:
        return cls(bridge=str(data["bridge"]), subnets=tuple(data.get("subnets") or ()),
                   internal=bool(data.get("internal")), icc=data.get("icc", True) is not False,
                   masquerade=data.get("masquerade", True) is not False,
                   peers=str(data.get("peers") or ""),
                   peer_subnet=str(data.get("peer_subnet") or ""))


@dataclass
class NetworkRecord:
    id: str
    #: Docker's CreateNetwork request, exactly as received
    request: dict[str, Any]
    #: the resolved CNI network config list endpoints are made from
    config: NetworkConfigList
    mode: Mode
    ipam: Ipam
    address_via: AddressVia = AddressVia.NONE
    #: host links pycni created for this network and removes with it (e.g. the bridge)
    owned_links: list[str] = field(default_factory=list)
    #: per-network iptables rules pycni installed (shim.firewall); None for a user's chain
    firewall: NetworkRules | None = None
    #: the name Docker knows the driver by when it created the network ("pycni", or
    #: "pycni:latest" as a managed plugin): reconciliation asks Docker about this name only
    driver: str = "pycni"
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        #: the request, parsed once
        self.docker = CreateNetworkRequest.from_json(self.request)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "kind": "network",
            "id": self.id,
            "request": self.request,
            "config": self.config.raw,
            "mode": str(self.mode),
            "ipam": str(self.ipam),
            "address_via": str(self.address_via),
            "owned_links": self.owned_links,
            "firewall": self.firewall.to_json() if self.firewall else {},
            "driver": self.driver,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkRecord:
        return cls(
            id=data["id"],
            request=data["request"],
            config=conflist_from_dict(data["config"], source=f"network {data['id'][:12]}"),
            mode=Mode(data["mode"]),
            ipam=Ipam(data["ipam"]),
            address_via=AddressVia(data.get("address_via") or ""),
            owned_links=list(data.get("owned_links") or []),
            firewall=NetworkRules.from_json(data["firewall"]) if data.get("firewall") else None,
            # records from before the name was kept were made under the default socket's name
            driver=data.get("driver") or "pycni",
            created=float(data.get("created") or time.time()),
        )


@dataclass
class EndpointRecord:
    """A Docker endpoint: its CNI attachment (in the staging netns) and Docker's side of it."""

    id: str
    network_id: str
    #: the staging netns's name (``pycni-`` + 12 hex)
    netns: str
    #: the temporary host name of the container-side link between CreateEndpoint and Join
    host_ifname: str
    attachment: Attachment
    phase: Phase = Phase.CREATING
    request: dict[str, Any] = field(default_factory=dict)
    #: the MAC the container sees (Docker's ``--mac-address``, else the link's)
    mac: str = ""
    #: the MAC the chain gave the link, which it keeps until Docker's goes on at Join
    link_mac: str = ""
    addresses: list[str] = field(default_factory=list)
    #: the routes through the interface as the chain left them in the staging netns (moving the
    #: link to the container loses them; Join hands them to Docker)
    routes: list[Route] = field(default_factory=list)
    sandbox_key: str = ""
    created: float = field(default_factory=time.time)
    #: where the chain runs: ``staging`` (pycni's namespace, the link moved out) or ``sandbox``
    #: (Docker's own, engines ≥ 28; :mod:`shim.sandbox`)
    place: str = "staging"
    #: the address the chain's IPAM handed out on its own at CreateEndpoint, for a chain that
    #: runs in Docker's sandbox at Join (:func:`shim.sandbox.reservation`); DeleteEndpoint
    #: releases it
    reserved: Attachment | None = None

    def __post_init__(self) -> None:
        #: Docker's CreateEndpoint request, parsed once (None for a leftover rebuilt from
        #: libcni's cache)
        self.docker = CreateEndpointRequest.from_json(self.request) if self.request else None

    # What the attachment holds, by the names the rest of pycni knows them.
    @property
    def ifname(self) -> str:
        return self.attachment.ifname

    @property
    def config(self) -> NetworkConfigList:
        return self.attachment.config

    @property
    def result(self) -> Result | None:
        return self.attachment.result

    @property
    def cni_args(self) -> tuple[tuple[str, str], ...]:
        return self.attachment.cni_args

    @property
    def capability_args(self) -> dict[str, Any]:
        return self.attachment.capability_args

    def to_json(self) -> dict[str, Any]:
        att = self.attachment
        # The same flat layout as libcni's cache entry, for people reading the file.
        return {
            "version": VERSION,
            "kind": "endpoint",
            "id": self.id,
            "network_id": self.network_id,
            "netns": self.netns,
            "netns_path": att.netns,
            "ifname": att.ifname,
            "host_ifname": self.host_ifname,
            "phase": str(self.phase),
            "request": self.request,
            "config": att.config.raw,
            "cni_args": [list(a) for a in att.cni_args],
            "capability_args": att.capability_args,
            "result": None if att.result is None else att.result.to_json(),
            "mac": self.mac,
            "link_mac": self.link_mac,
            "addresses": self.addresses,
            "routes": [r.to_json(att.config.cni_version) for r in self.routes],
            "sandbox_key": self.sandbox_key,
            "created": self.created,
            "place": self.place,
            "reserved": None if self.reserved is None else self.reserved.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndpointRecord:
        config = conflist_from_dict(data["config"], source=f"endpoint {data['id'][:12]}")
        result = data.get("result")
        attachment = Attachment(
            container_id=data["id"],
            netns=data.get("netns_path") or os.path.join("/run/netns", data["netns"]),
            ifname=data["ifname"],
            config=config,
            cni_args=tuple((str(k), str(v)) for k, v in data.get("cni_args") or []),
            capability_args=dict(data.get("capability_args") or {}),
            result=None if result is None else Result.from_json(result, config.cni_version),
        )
        return cls(
            id=data["id"],
            network_id=data["network_id"],
            netns=data["netns"],
            host_ifname=data["host_ifname"],
            attachment=attachment,
            phase=Phase(data.get("phase") or "creating"),
            request=data.get("request") or {},
            mac=data.get("mac") or "",
            link_mac=data.get("link_mac") or "",
            addresses=list(data.get("addresses") or []),
            routes=[Route.from_json(r) for r in data.get("routes") or []],
            sandbox_key=data.get("sandbox_key") or "",
            created=float(data.get("created") or time.time()),
            place=data.get("place") or "staging",
            reserved=Attachment.from_json(data["reserved"], f"endpoint {data['id'][:12]}'s IPAM")
            if data.get("reserved") else None,
        )


@dataclass
class ContainerRecord:
    """An attachment of the ``--network none`` mode (:mod:`shim.containers`): a conflist ADDed
    straight into a container's own namespace. Everything DEL needs is in ``attachment``."""

    #: the conflist's name (the attachment's network)
    network: str
    attachment: Attachment
    #: the container's name when it was attached (for people; the id is what counts)
    name: str = ""
    #: the container's main process when it was attached: its namespace is /proc/<pid>/ns/net
    pid: int = 0
    created: float = field(default_factory=time.time)
    #: ``pycni run --holder``: the app container that joined this (holder) container's namespace
    #: with ``--network container:``, and its name
    app_id: str = ""
    app_name: str = ""

    @property
    def id(self) -> str:
        """The record's file name: one per (container, network, ifname), as libcni's cache."""
        att = self.attachment
        return f"{att.container_id}.{self.network}.{att.ifname}"

    @property
    def container_id(self) -> str:
        return self.attachment.container_id

    @property
    def ifname(self) -> str:
        return self.attachment.ifname

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "kind": "container",
            "id": self.id,
            "network": self.network,
            "name": self.name,
            "pid": self.pid,
            **self.attachment.to_json(),
            "created": self.created,
            "app_id": self.app_id,
            "app_name": self.app_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        return cls(
            network=str(data["network"]),
            attachment=Attachment.from_json(data, f"container record {data['id']}"),
            name=str(data.get("name") or ""),
            pid=int(data.get("pid") or 0),
            created=float(data.get("created") or time.time()),
            app_id=str(data.get("app_id") or ""),
            app_name=str(data.get("app_name") or ""),
        )


@dataclass
class FailureRecord:
    """The controller's (``pycni watch``) last failed attempt to attach a labelled container: kept
    where ``pycni ls`` looks until an attempt succeeds or the container goes."""

    container_id: str
    network: str
    error: str
    name: str = ""
    at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.container_id

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "kind": "failure", "id": self.id, "network": self.network,
                "error": self.error, "name": self.name, "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FailureRecord:
        return cls(container_id=str(data["id"]), network=str(data["network"]),
                   error=str(data["error"]), name=str(data.get("name") or ""),
                   at=float(data.get("at") or 0.0))
