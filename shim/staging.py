"""The staging namespace: where the CNM driver runs a chain before Docker has a container netns.

Docker (≤ 27) has no container network namespace yet at CreateEndpoint and Join, and wants a host
interface it can move in itself. So each endpoint gets a namespace pycni owns:

* **CreateEndpoint**: :meth:`Staging.make` creates ``pycni-<endpoint id[:12]>``; the chain's ADD
  creates ``eth0`` in it; :meth:`Staging.take_out` reads the routes the chain set there and moves
  the link out to the host as ``pcn<endpoint id[:12]>``. Docker moves it into the container at
  Join, names it ``ethN`` and puts the addresses on it.
* **DeleteEndpoint**: :meth:`Staging.put_back` brings the link back into the staging netns as
  ``eth0`` with its addresses, when a plugin's DEL needs it there (:mod:`shim.plugins`); after
  DEL, :meth:`Staging.clear` removes the namespace and whatever link is left.

The namespace lives from CreateEndpoint to DeleteEndpoint, so DEL runs against the same netns
path as ADD, as CNI requires. :class:`StagingPlace` is this dance as a place of the one
attachment lifecycle (:mod:`shim.lifecycle`), which also tells the neighbours the link's MAC
while it is still here, up with its addresses on the chain's network, before Docker moves it
into the container.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from . import answers, plugins
from .attach import Attachment, quietly
from .cni.types import Result
from .endpoint_chain import EndpointChain
from .lifecycle import Ledger, Lifecycle, result_found
from .netlink import LinkInfo
from .protocol import EndpointInterface
from .seams import Links
from .state import EndpointRecord, Phase

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

    def __init__(self, links: Links) -> None:
        self.links = links

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

    def make(self, rec: EndpointRecord) -> None:
        self.links.create_netns(rec.netns)

    def take_out(self, rec: EndpointRecord) -> LinkInfo:
        """Move ``eth0`` to the host, recording the routes the chain set through it."""
        moved, rec.routes = self.links.move_to_host(rec.netns, rec.ifname, rec.host_ifname)
        return moved

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
        return result_found(rec.attachment, mac, cidrs)

    def clear(self, rec: EndpointRecord) -> None:
        """After DEL: the namespace (with a stand-in or leftover in it) and the host link,
        wherever Docker left it. Safe to repeat."""
        self.links.delete_link(rec.ifname, rec.netns)
        self.links.remove_netns(rec.netns)
        if self.links.delete_link(rec.host_ifname, macs=_macs(rec)):
            return
        if rec.mac and rec.sandbox_key:
            self.links.delete_by_mac(rec.sandbox_key, rec.mac)


class StagingPlace:
    """One endpoint's staging namespace as a place of the attachment lifecycle."""

    def __init__(self, staging: Staging, rec: EndpointRecord) -> None:
        self.staging = staging
        self.rec = rec
        #: the link as it reached the host (after :meth:`settle`)
        self.moved: LinkInfo | None = None

    def open(self, att: Attachment) -> None:
        self.staging.make(self.rec)

    def settle(self, att: Attachment, undo: contextlib.ExitStack) -> None:
        self.moved = self.staging.take_out(self.rec)
        undo.callback(quietly, self.staging.put_back, self.rec)

    def reopen(self, att: Attachment) -> Attachment:
        """The namespace again (a reboot took it), and the link back in it when a plugin's DEL
        needs it there (:mod:`shim.plugins`)."""
        self.staging.make(self.rec)
        if att.result is not None and plugins.del_needs_link(att.config):
            # with the addresses the record has: none for an attachment known from libcni's
            # cache alone (an undo that failed part-way), whose bridge DEL has run already
            self.staging.put_back(self.rec)
        return att

    def found_result(self, att: Attachment) -> Result | None:
        return self.staging.found_result(self.rec)

    def close(self, att: Attachment) -> None:
        self.staging.clear(self.rec)


def _macs(rec: EndpointRecord) -> set[str]:
    return {m.lower() for m in (rec.mac, rec.link_mac) if m}


def _findable_mac(rec: EndpointRecord) -> str:
    """The MAC the link carries now: Docker puts its own (``--mac-address``) on it at Join;
    before that it has the one the chain gave it (a plugin may ignore ``MAC=``)."""
    if rec.sandbox_key or not rec.link_mac:
        return rec.mac
    return rec.link_mac


def attach(lifecycle: Lifecycle, staging: Staging, ledger: Ledger, rec: EndpointRecord,
           asked: EndpointInterface) -> answers.EndpointAnswer:
    """A driver endpoint's ADD in its staging place; Docker's answer from the result."""
    place = StagingPlace(staging, rec)
    with lifecycle.attaching(rec.attachment, place, ledger):
        assert place.moved is not None
        # A plugin that replaced the on-link route of its subnet (ptp routes it via its
        # gateway) means a host address: Docker would re-add the on-link route with the
        # prefix, so it gets the address as /32 (/128) and the routes as StaticRoutes.
        rec.addresses = [answers.as_host_if_not_on_link(a, rec.routes) for a in rec.addresses]
        # Docker puts its own MAC (--mac-address) on the link at Join.
        rec.link_mac = place.moved.mac
        rec.mac = asked.mac_address or place.moved.mac
        answer = answers.answer(asked, rec)
        rec.phase = Phase.READY
    return answer
