"""The staging namespace: where the CNM driver runs a chain before Docker has a container netns.

Docker (≤ 27) has no container network namespace yet at CreateEndpoint and Join, and wants a host
interface it can move in itself. So each endpoint gets a namespace pycni owns:

* **CreateEndpoint**: :meth:`Staging.make` creates ``pycni-<endpoint id[:12]>``; the chain's ADD
  creates ``eth0`` in it; :meth:`Staging.take_out` reads the routes the chain set there, tells
  the neighbours the link's addresses are at its MAC (see below), and moves the link out to the
  host as ``pcn<endpoint id[:12]>``. Docker moves it into the container at Join, names it
  ``ethN`` and puts the addresses on it.
* **DeleteEndpoint**: :meth:`Staging.put_back` brings the link back into the staging netns as
  ``eth0`` with its addresses, when a plugin's DEL needs it there (:mod:`shim.plugins`); after
  DEL, :meth:`Staging.clear` removes the namespace and whatever link is left.

The namespace lives from CreateEndpoint to DeleteEndpoint, so DEL runs against the same netns
path as ADD, as CNI requires.

**Telling the neighbours.** A restarted container gets a new endpoint, and with most chains a
new MAC, but often its old address; the host and the other containers keep the old MAC for
that address until their entry times out (up to ~45 s). In the staging namespace the link is
up with its addresses, on the chain's network already, and pycni can act there (Docker moves
the link into the container after pycni's answer to Join): a gratuitous ARP / unsolicited
Neighbor Advertisement from ``eth0`` there updates every entry before the container starts.
It is best effort: a failure is logged, never fatal.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from . import neighbours, plugins
from .attach import Attacher, Attachment
from .cni.types import Result
from .endpoint_chain import EndpointChain
from .errors import NetlinkFailure
from .netlink import LinkInfo
from .seams import Links
from .state import EndpointRecord

log = logging.getLogger(__name__)

IFNAME = "eth0"
NETNS_PREFIX = "pycni-"
HOST_LINK_PREFIX = "pcn"
NETNS_NAME = re.compile(NETNS_PREFIX + r"([0-9a-f]{12})")
HOST_LINK_NAME = re.compile(HOST_LINK_PREFIX + r"([0-9a-f]{12})")


def netns_name(endpoint_id: str) -> str:
    return NETNS_PREFIX + endpoint_id[:12]


def host_link_name(endpoint_id: str) -> str:
    return HOST_LINK_PREFIX + endpoint_id[:12]


class Staging:
    """The staging dance over a :class:`~shim.seams.Links` (netlink, or a fake)."""

    def __init__(
        self,
        links: Links,
        announce: Callable[[str, str, Iterable[str]], None] = neighbours.announce,
    ) -> None:
        self.links = links
        #: tells neighbours ``(netns, ifname, addresses)`` are at the link's MAC
        self.announce = announce

    def path(self, endpoint_id: str) -> str:
        return self.links.netns_path(netns_name(endpoint_id))

    def new_record(self, network_id: str, endpoint_id: str, chain: EndpointChain,
                   request: dict[str, Any]) -> EndpointRecord:
        """An endpoint whose chain runs here: ``eth0`` in its staging netns, out to the host as
        ``pcn<id12>``."""
        attachment = Attachment(
            container_id=endpoint_id,
            netns=self.path(endpoint_id),
            ifname=IFNAME,
            config=chain.config,
            cni_args=chain.cni_args,
            capability_args=chain.capability_args,
        )
        return EndpointRecord(
            id=endpoint_id,
            network_id=network_id,
            netns=netns_name(endpoint_id),
            host_ifname=host_link_name(endpoint_id),
            attachment=attachment,
            request=request,
        )

    def delete(self, rec: EndpointRecord, attacher: Attacher) -> None:
        """DEL where it finds what ADD made, then the namespace goes: the link back in the
        staging netns when a plugin's DEL needs it there (:mod:`shim.plugins`), ADD's result
        from libcni's cache, or read from ``eth0`` here when ADD never finished."""
        att = rec.attachment
        if att.result is None:
            # Crashed between ADD and saving its result: libcni's cache has it.
            cached = attacher.cached_result(att)
            if cached is not None:
                att.result = cached
                rec.addresses = [str(ip.address) for ip in att.ips()]
                rec.mac = rec.mac or att.mac()
        self.make(rec)
        given = None
        if att.result is None:
            # ADD never finished: no result anywhere. What the chain did is still on eth0 in the
            # staging netns, and DEL needs it as prevResult.
            given = self.found_result(rec)
        elif plugins.del_needs_link(att.config):
            self.put_back(rec)
        attacher.delete(att, result=given)
        self.clear(rec)

    def make(self, rec: EndpointRecord) -> None:
        self.links.create_netns(rec.netns)

    def take_out(self, rec: EndpointRecord) -> LinkInfo:
        """Record the routes the chain set on ``eth0``, tell the neighbours its addresses, then
        move it to the host."""
        rec.routes = self.links.routes(rec.netns, rec.ifname)
        if rec.addresses:
            try:
                self.announce(rec.netns, rec.ifname, rec.addresses)
            except NetlinkFailure as exc:
                log.warning("endpoint %s: neighbours not told its MAC: %s", rec.id[:12], exc)
        return self.links.move_to_host(rec.netns, rec.ifname, rec.host_ifname)

    def put_back(self, rec: EndpointRecord) -> str:
        """The link back in the staging netns as ``eth0`` with its addresses; where it was."""
        self.links.create_netns(rec.netns)  # exists unless the host rebooted
        where: str = self.links.restore_for_delete(
            rec.netns,
            rec.ifname,
            host_name=rec.host_ifname,
            mac=_findable_mac(rec),
            addresses=rec.addresses,
            sandbox=rec.sandbox_key,
        )
        return where

    def found_result(self, rec: EndpointRecord) -> Result | None:
        """What an ADD that never finished left on ``eth0``, as a result DEL can be given
        (firewall removes nothing without a prevResult)."""
        mac, cidrs = self.links.addresses(rec.netns, rec.ifname)
        if not cidrs:
            return None
        version = rec.config.cni_version
        return Result.from_json(
            {
                "cniVersion": version,
                "interfaces": [{"name": rec.ifname, "mac": mac, "sandbox": rec.attachment.netns}],
                "ips": [{"address": c, "interface": 0} for c in cidrs],
            }
        ).convert(version)

    def clear(self, rec: EndpointRecord) -> None:
        """After DEL: the namespace (with a stand-in or leftover in it) and the host link,
        wherever Docker left it. Safe to repeat."""
        self.links.delete_link(rec.ifname, rec.netns)
        self.links.remove_netns(rec.netns)
        info = self.links.link_info(rec.host_ifname)
        if info is not None and (not rec.mac or info.mac.lower() in _macs(rec)):
            self.links.delete_link(rec.host_ifname)
        elif rec.mac and rec.sandbox_key:
            self.links.delete_by_mac(rec.sandbox_key, rec.mac)


def _macs(rec: EndpointRecord) -> set[str]:
    return {m.lower() for m in (rec.mac, rec.link_mac) if m}


def _findable_mac(rec: EndpointRecord) -> str:
    """The MAC the link carries now: Docker puts its own (``--mac-address``) on it at Join;
    before that it has the one the chain gave it (a plugin may ignore ``MAC=``)."""
    if rec.sandbox_key or not rec.link_mac:
        return rec.mac
    return rec.link_mac
