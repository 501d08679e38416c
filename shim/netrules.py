"""A network's own iptables rules, as the driver puts them in at CreateNetwork (and again at
start) and takes them out at DeleteNetwork: a zero-config network's forwarding, masquerading and
isolation, and the loopback guard of any chain that may open the host's 127.0.0.0/8
(:mod:`shim.firewall`)."""

from __future__ import annotations

from collections.abc import Iterable

from . import plugins
from .seams import Rules
from .state import NetworkRecord


def add(rules: Rules, record: NetworkRecord) -> None:
    """Idempotent: a restart puts back whatever a reboot (or an admin's flush) took."""
    if plugins.opens_loopback(record.config):
        rules.add_guard(record.id[:12])
    if record.firewall is not None:
        rules.add_network(record.id, record.firewall)


def remove(rules: Rules, record: NetworkRecord, others: Iterable[NetworkRecord]) -> None:
    """Repeat-safe. portmap opened route_localnet on the network's bridge: a bridge that stays
    (not this network's to remove) gets it closed again unless one of ``others`` uses it."""
    if record.firewall is not None:
        rules.remove_network(record.id, record.firewall)
    rules.remove_guard(record.id[:12])
    shared = {b for n in others for b in plugins.bridges(n.config)}
    rules.close_localnet(b for b in plugins.bridges(record.config) if b not in shared)
