"""The attachment core: one CNI chain on one network namespace.

An :class:`Attachment` is what the CNI spec calls an attachment — (container id, netns, ifname)
on a network config list — plus everything DEL must be given again: the exact config ADD ran
with (whatever the conf dir says by now), ADD's CNI_ARGS and capability args, and ADD's result.
Both of pycni's modes stand on it: the CNM driver attaches to a staging netns it owns
(:mod:`shim.driver`), the ``--network none`` mode straight to a container's own namespace.
It knows nothing of Docker.

:class:`Attacher` carries out the verbs the way libcni's runtime side does, and the way the
bridge plugin's ``cmdAdd`` rolls back with ``defer``:

* :meth:`Attacher.add` runs ADD and registers its undo (DEL) on the caller's ``ExitStack``; if
  ADD fails part-way, what the plugins that succeeded did is DELeted right away, with their
  partial result as ``prevResult``, and the error names the plugin that failed.
* :meth:`Attacher.delete` runs DEL in reverse with the attachment's own config and arguments,
  and treats "already gone" as done: it is safe to repeat.
* :meth:`Attacher.publish` / :meth:`Attacher.unpublish` add or remove capability args after the
  fact (Docker decides on published ports after the attachment exists).

The lock rule is the owner's (:class:`shim.registry.Registry`): a caller holds the lock of the
network the attachment belongs to; nothing here locks.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import plugins, ports
from .cni import CNI, AddFailed, RuntimeConf
from .cni.cache import CachedAttachment
from .cni.config import NetworkConfigList, conflist_from_dict
from .cni.types import IPConfig, Result
from .errors import CNIError, PycniError

log = logging.getLogger(__name__)

#: the capability arg of published ports
PORTS = "portMappings"


@dataclass
class Attachment:
    """One CNI attachment and everything its DEL needs (parsed, typed, never raw dicts)."""

    container_id: str
    #: the network namespace's path
    netns: str
    ifname: str
    #: the exact config list ADD ran with
    config: NetworkConfigList
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: Result | None = None

    def runtime(self) -> RuntimeConf:
        """libcni's RuntimeConf for this attachment: the one place pycni builds one."""
        return RuntimeConf(
            container_id=self.container_id,
            netns=self.netns,
            ifname=self.ifname,
            args=self.cni_args,
            capability_args=self.capability_args,
        )

    def to_json(self) -> dict[str, Any]:
        """The attachment as records keep it, flat (the layout of libcni's cache entry)."""
        return {
            "container_id": self.container_id,
            "netns_path": self.netns,
            "ifname": self.ifname,
            "config": self.config.raw,
            "cni_args": [list(a) for a in self.cni_args],
            "capability_args": self.capability_args,
            "result": None if self.result is None else self.result.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> Attachment:
        """An attachment as :meth:`to_json` wrote it; ``source`` names the record in errors."""
        config = conflist_from_dict(data["config"], source=source)
        result = data.get("result")
        return cls(
            container_id=str(data["container_id"]),
            netns=str(data.get("netns_path") or ""),
            ifname=str(data["ifname"]),
            config=config,
            cni_args=tuple((str(k), str(v)) for k, v in data.get("cni_args") or []),
            capability_args=dict(data.get("capability_args") or {}),
            result=None if result is None else Result.from_json(result, config.cni_version),
        )

    @classmethod
    def from_cache(cls, entry: CachedAttachment, netns: str) -> Attachment:
        """An attachment rebuilt from libcni's cache entry (one nobody has a record of), for a
        DEL in ``netns`` with ADD's own config and arguments."""
        config = conflist_from_dict(json.loads(entry.config) if entry.config else {},
                                    source=f"libcni cache entry {entry.container_id[:12]}")
        return cls(
            container_id=entry.container_id,
            netns=netns,
            ifname=entry.ifname,
            config=config,
            cni_args=tuple((str(k), str(v)) for k, v in entry.cni_args),
            capability_args=dict(entry.capability_args),
            result=Result.from_json(entry.result, config.cni_version) if entry.result else None,
        )

    def chain(self) -> NetworkConfigList:
        """The plugins this attachment runs (idle ones left out; see :mod:`shim.plugins`)."""
        return plugins.effective(self.config, self.capability_args)

    def elsewhere(self, netns: str, ifname: str | None = None) -> Attachment:
        """The same attachment seen in another namespace (CHECK against a container's live
        namespace, after Docker moved the interface there)."""
        return replace(self, netns=netns, ifname=ifname or self.ifname)

    def port_mappings(self) -> list[ports.Mapping]:
        """The host ports this attachment publishes (its ``portMappings`` capability arg)."""
        return [ports.Mapping.from_cni(m) for m in self.capability_args.get(PORTS) or []]

    def ips(self) -> list[IPConfig]:
        """The result's addresses on the interface in this attachment's namespace."""
        if self.result is None:
            return []
        return own_ips(self.result, self.netns)

    def mac(self) -> str:
        if self.result is None:
            return ""
        return own_mac(self.result, self.netns)


def own_ips(result: Result, netns: str) -> list[IPConfig]:
    """The result's addresses on the container-side interface (the one in ``netns``)."""
    indexes = [n for n, i in enumerate(result.interfaces) if i.sandbox == netns]
    if not indexes:
        return list(result.ips)
    return [ip for ip in result.ips if ip.interface is None or ip.interface in indexes]


def own_mac(result: Result, netns: str) -> str:
    for iface in result.interfaces:
        if iface.sandbox == netns and iface.mac:
            return iface.mac
    return ""


class Attacher:
    """The CNI verbs on attachments. ``cni`` is the seam (a fake executor in unit tests)."""

    def __init__(self, cni: CNI) -> None:
        self.cni = cni

    def add(self, att: Attachment, undo: contextlib.ExitStack) -> Result:
        """ADD; the result is kept on ``att``, and DEL is pushed onto ``undo``.

        A failed ADD is undone here and now — DEL with the partial result, so the plugins that
        did succeed release their addresses and rules — and re-raised.
        """
        chain, rt = att.chain(), att.runtime()
        self.ready(chain)
        try:
            att.result = self.cni.add(chain, rt)
        except AddFailed as exc:
            try:
                self.cni.delete(chain, rt, result=exc.partial)
            except PycniError as cleanup:
                # Every plugin's DEL ran; what one could not undo is kept in libcni's cache,
                # where gc finds it and runs DEL again.
                log.error("cleanup after failed ADD of %s: %s", rt.container_id[:12], cleanup)
                self.cni.remember(chain, rt, exc.partial, undo_failed=str(cleanup))
                exc.undo_failed = str(cleanup)
            raise
        undo.callback(quietly, self.delete, att)
        return att.result

    def ready(self, chain: NetworkConfigList) -> None:
        """STATUS before ADD (a 1.1.0 list), as the spec asks of runtimes: a plugin that says it
        cannot serve ADD gets none, and the error names it and what it said."""
        try:
            self.cni.status(chain)
        except CNIError as exc:
            if exc.code in (CNIError.INCOMPATIBLE_VERSION, CNIError.INVALID_ENV):
                # a plugin that does not speak STATUS (skel answers an unknown CNI_COMMAND
                # with code 4): nothing it says keeps ADD from running
                log.debug("%s", exc)
                return
            raise CNIError(f"{exc.msg}; {_STATUS_MEANS.get(exc.code, 'it is not ready')}, "
                           "so ADD was not run", plugin=exc.plugin, verb="STATUS",
                           code=exc.code, details=exc.details) from exc

    def delete(self, att: Attachment, *, result: Result | None = None) -> None:
        """DEL with ADD's config and arguments; the cached result unless ``result`` is given."""
        self.cni.delete(att.chain(), att.runtime(), result=result)

    def cached_result(self, att: Attachment) -> Result | None:
        """libcni's cached result: what an ADD that finished left, if its runtime crashed."""
        return self.cni.cached_result(att.config, att.runtime())

    def publish(self, att: Attachment, key: str, value: Any) -> None:
        """Give the plugins of capability ``key`` their args now (ADD for just them)."""
        types = _plugins_of(att.config, key)
        before = att.capability_args
        att.capability_args = {**before, key: value}
        try:
            self.cni.update_plugins(att.config, att.runtime(), "ADD", types)
        except BaseException:
            att.capability_args = before
            raise

    def unpublish(self, att: Attachment, key: str) -> None:
        """DEL the plugins of capability ``key`` with the args their ADD had, then forget them,
        so the attachment's final DEL doesn't try again."""
        if key not in att.capability_args:
            return
        remaining = {k: v for k, v in att.capability_args.items() if k != key}
        types = _plugins_of(att.config, key)
        self.cni.update_plugins(att.config, att.runtime(), "DEL", types, record=remaining)
        att.capability_args = remaining

    def check(self, att: Attachment, result: Result) -> None:
        self.cni.check(att.config, att.runtime(), result=result)


#: what the spec's STATUS error codes say
_STATUS_MEANS = {
    50: "the plugin cannot serve ADD now",
    51: "the plugin cannot serve ADD now, and existing containers may have limited "
        "connectivity",
}


def has_capability(config: NetworkConfigList, key: str) -> bool:
    return bool(_plugins_of(config, key))


def _plugins_of(config: NetworkConfigList, key: str) -> set[str]:
    return {p.type for p in config.plugins if p.capabilities.get(key)}


def quietly(func: Any, *args: Any, **kwargs: Mapping[str, Any]) -> None:
    """Run an undo step; log, don't raise, so the remaining undo steps still run."""
    try:
        func(*args, **kwargs)
    except PycniError as exc:
        log.error("undo step %s failed: %s", getattr(func, "__name__", func), exc)
