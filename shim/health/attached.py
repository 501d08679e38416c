"""``pycni check CONTAINER`` for the attachments of the ``--network none`` mode.

These attachments live in the container's own namespace (``/proc/<pid>/ns/net``) under the name
ADD gave them, so there is nothing to rewrite: pycni's record says which namespace, interface,
MAC and addresses; the check looks that the container still runs with the same main process (a
restart is a new, unwired namespace), that libcni's cache still holds ADD's result for DEL, that
the interface carries its addresses, and runs CNI CHECK with ADD's own config and arguments.

Seams, as in :mod:`.container`: Docker's view (a :class:`~shim.dockerview.Target`, or None once
Docker forgot the container), the links of a namespace, and CNI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .. import netlink
from ..cni import CNI
from ..cni.cache import ResultCache
from ..dockerview import Target
from ..errors import NetlinkFailure
from ..netlink import LiveLink
from ..settings import Settings
from ..state import ContainerRecord
from .cnicheck import missing_addresses, run_check
from .findings import FAIL, OK, Finding


def check_attached(
    target: Target | None,
    records: Sequence[ContainerRecord],
    settings: Settings,
    *,
    cni: CNI | None = None,
    read_links: Callable[[str], list[LiveLink]] = netlink.links_in,
) -> list[Finding]:
    """Every attachment in ``records`` (one container's, or its holder's) against the live
    container ``target``."""
    findings: list[Finding] = []
    for rec in records:
        findings += _check_one(rec, target, settings, cni, read_links)
    return findings


def _check_one(
    rec: ContainerRecord,
    target: Target | None,
    settings: Settings,
    cni: CNI | None,
    read_links: Callable[[str], list[LiveLink]],
) -> list[Finding]:
    att = rec.attachment
    subject = f"attachment {rec.network}/{att.ifname}"
    who = rec.app_name or rec.name or att.container_id[:12]
    again = (f"`pycni detach {who} {rec.network}` then `pycni attach` again "
             "(`pycni watch` does this itself for labelled containers)")
    if target is None or not target.running:
        state = "is gone" if target is None else "is not running"
        return [Finding(FAIL, subject, f"the container {state}: the attachment holds its "
                        "address for nothing", "`pycni gc` (or `pycni detach`) releases it")]
    if target.pid != rec.pid:
        return [Finding(FAIL, subject, f"the container restarted since pycni attached it (pid "
                        f"{rec.pid}, now {target.pid}): its namespace is new and not wired", again)]
    if att.result is None:
        return [Finding(FAIL, subject, "pycni never recorded a CNI result for it", again)]
    findings: list[Finding] = []
    cache_file = ResultCache(settings.cache_dir).path(att.config.name, att.container_id,
                                                      att.ifname)
    if os.path.exists(cache_file):
        findings.append(Finding(OK, subject, "pycni's record and libcni's cache file are there"))
    else:
        findings.append(Finding(FAIL, subject, f"libcni's cache file {cache_file} is missing: DEL "
                                "would run without ADD's result", again))
    try:
        links = read_links(att.netns)
    except NetlinkFailure as exc:
        return findings + [Finding(FAIL, subject, f"cannot look into the container: {exc}",
                                   again)]
    link = next((lk for lk in links if lk.name == att.ifname), None)
    if link is None:
        return findings + [Finding(FAIL, subject, f"the container has no interface "
                                   f"{att.ifname}", again)]
    expected = [str(ip.address) for ip in att.ips()]
    missing = missing_addresses(expected, link.addresses)
    has = ", ".join(link.addresses) or "no address"
    mac = att.mac()
    if missing:
        findings.append(Finding(FAIL, subject, f"{link.name} lacks {', '.join(missing)} (has "
                                f"{has})", again))
    elif mac and link.mac.lower() != mac.lower():
        findings.append(Finding(FAIL, subject, f"{link.name} has MAC {link.mac}, ADD gave "
                                f"{mac}", again))
    else:
        findings.append(Finding(OK, subject, f"{link.name} ({link.mac}) carries {has}"))
    if cni is None:
        cni = CNI(settings.cni_path, cache_dir=settings.cache_dir, timeout=settings.plugin_timeout)
    result = att.result.convert(att.config.cni_version)
    return findings + run_check(cni, att.config, att.runtime(), result, subject, again,
                                add_ifname=att.ifname)
