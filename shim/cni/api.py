"""The runtime's side of CNI: ADD, CHECK, DEL, STATUS, GC and VERSION on a network config list.

This mirrors libcni's ``CNIConfig`` (``libcni/api.go``), so a container wired by pycni looks to other
CNI tools exactly as if containerd or cri-o had wired it:

* **ADD** runs the plugins in order; each gets the previous plugin's result as ``prevResult``
  (converted to the list's version), the list's ``name`` and ``cniVersion``, and a
  ``runtimeConfig`` holding only the capability args the plugin declares in ``capabilities``. The
  final result is cached.
* **DEL** runs the plugins in reverse with the cached result as ``prevResult`` (0.4.0 and later) and
  the same CNI_ARGS and capability args as ADD. DEL of something already gone succeeds.
* **CHECK** (0.4.0 and later, unless ``disableCheck``) runs in order with the cached result.
* **STATUS** and **GC** (1.1.0) run every plugin; GC first DELs cached attachments that are not in
  the valid set, then tells plugins which attachments are valid.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import CNIError, ConfigError, InvalidRequest
from .cache import CachedAttachment, ResultCache
from .config import (
    NetworkConfigList,
    PluginConf,
    validate_container_id,
    validate_ifname,
    validate_network_name,
)
from .invoke import Args, Exec, RawExec, decode_json
from .runtime import AddFailed, DelFailed, RuntimeConf
from .types import CURRENT_VERSION, SUPPORTED_VERSIONS, Result, VersionInfo, version_at_least

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class CNI:
    """Runs network config lists. ``exec`` is the seam: tests pass a fake executor."""

    def __init__(
        self,
        path: Sequence[str],
        *,
        exec: Exec | None = None,
        cache_dir: str = "/var/lib/cni",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.path = list(path)
        self.exec: Exec = exec if exec is not None else RawExec()
        self.cache = ResultCache(cache_dir)
        self.timeout = timeout

    # --- the verbs -------------------------------------------------------------------------------

    def add(self, net: NetworkConfigList, rt: RuntimeConf) -> Result:
        """ADD every plugin in order; cache and return the final result (in the list's version)."""
        validate_container_id(rt.container_id)
        validate_ifname(rt.ifname)
        validate_network_name(net.name)
        if not rt.netns:
            raise InvalidRequest("ADD needs a network namespace path")
        result: Result | None = None
        for plugin in net.plugins:
            try:
                stdout = self._run(net, plugin, "ADD", rt, result)
                data = decode_json(plugin.type, "ADD", stdout)
                result = Result.from_json(data, default_version=net.cni_version)
            except CNIError as exc:
                raise AddFailed(exc.label(plugin.type, "ADD"), result, plugin.describe()) from exc
        assert result is not None  # a list has at least one plugin
        result = result.convert(net.cni_version)
        self.cache.write(
            CachedAttachment(
                network=net.name,
                container_id=rt.container_id,
                ifname=rt.ifname,
                config=net.bytes,
                netns=rt.netns,
                cni_args=list(rt.args),
                capability_args=dict(rt.capability_args),
                result=result.to_json(),
            )
        )
        return result

    def delete(
        self, net: NetworkConfigList, rt: RuntimeConf, *, result: Result | None = None
    ) -> None:
        """DEL every plugin in reverse, then drop the cache record. Idempotent.

        ``prevResult`` is ``result`` if given (for undoing a failed ADD), else the cached result
        (0.4.0 and later). CNI_ARGS and capability args default to those cached at ADD.
        """
        validate_container_id(rt.container_id)
        validate_ifname(rt.ifname)
        cached = self.cache.read(net.name, rt.container_id, rt.ifname)
        if cached is not None:
            rt = RuntimeConf(
                container_id=rt.container_id,
                netns=rt.netns,
                ifname=rt.ifname,
                args=rt.args or tuple(cached.cni_args),
                capability_args=rt.capability_args or cached.capability_args,
            )
        prev: Result | None = None
        if version_at_least(net.cni_version, "0.4.0"):
            if result is not None:
                prev = result
            elif cached is not None and cached.result:
                try:
                    prev = Result.from_json(cached.result, default_version=net.cni_version)
                except CNIError as exc:
                    log.warning("ignoring unreadable cached result for %s: %s", rt.container_id, exc)
        failed: list[CNIError] = []
        for plugin in reversed(net.plugins):
            # Unlike libcni, which stops at the first failure, go on: a plugin whose DEL fails
            # must not leave the ones before it in place (their addresses, their rules). The
            # cache entry stays until every DEL succeeded, so a later DEL (gc) can try again.
            try:
                self._run(net, plugin, "DEL", rt, prev)
            except CNIError as exc:
                failed.append(exc.label(plugin.type, "DEL"))
        if len(failed) == 1:
            raise failed[0]
        if failed:
            raise DelFailed(failed)
        self.cache.delete(net.name, rt.container_id, rt.ifname)

    def remember(self, net: NetworkConfigList, rt: RuntimeConf, result: Result | None,
                 undo_failed: str = "") -> None:
        """Cache an attachment that could not be undone in full (its ADD failed, and so did a
        DEL of the undo), as ADD would have: a later DEL, or gc, finds its config, arguments
        and what was made."""
        self.cache.write(
            CachedAttachment(
                network=net.name, container_id=rt.container_id, ifname=rt.ifname,
                config=net.bytes, netns=rt.netns, cni_args=list(rt.args),
                capability_args=dict(rt.capability_args),
                result=result.convert(net.cni_version).to_json() if result is not None else None,
                undo_failed=undo_failed,
            )
        )

    def check(self, net: NetworkConfigList, rt: RuntimeConf, *, result: Result | None = None) -> None:
        """CHECK every plugin in order against the cached (or given) result."""
        if not version_at_least(net.cni_version, "0.4.0"):
            raise CNIError(
                f"configuration version {net.cni_version!r} does not support the CHECK command",
                verb="CHECK",
                code=CNIError.INCOMPATIBLE_VERSION,
            )
        if net.disable_check:
            return
        validate_container_id(rt.container_id)
        validate_ifname(rt.ifname)
        if result is None:
            result = self.cached_result(net, rt)
        if result is None:
            raise CNIError(
                f"no cached result for network {net.name!r}, container {rt.container_id!r}, "
                f"interface {rt.ifname!r}: was it added?",
                verb="CHECK",
            )
        cached = self.cache.read(net.name, rt.container_id, rt.ifname)
        if cached is not None:
            rt = RuntimeConf(
                container_id=rt.container_id,
                netns=rt.netns or cached.netns,
                ifname=rt.ifname,
                args=rt.args or tuple(cached.cni_args),
                capability_args=rt.capability_args or cached.capability_args,
            )
        for plugin in net.plugins:
            self._run(net, plugin, "CHECK", rt, result)

    def status(self, net: NetworkConfigList) -> bool:
        """STATUS every plugin (1.1.0). ``False`` if the list's version predates STATUS."""
        if not version_at_least(net.cni_version, "1.1.0"):
            return False
        for plugin in net.plugins:
            self._exec(plugin, self._inject(net, plugin), Args(command="STATUS", path=self._path))
        return True

    def gc(
        self, net: NetworkConfigList, valid: Iterable[tuple[str, str]] | None = None
    ) -> list[CachedAttachment]:
        """Garbage-collect ``net``: DEL stale cached attachments, then GC the plugins (1.1.0).

        ``valid`` is the set of ``(container_id, ifname)`` still in use; ``None`` means "unknown",
        in which case no cached attachment is considered stale. Returns the attachments deleted.
        """
        if net.disable_gc:
            return []
        keep = set(valid) if valid is not None else None
        removed: list[CachedAttachment] = []
        errors: list[str] = []
        for entry in self.cache.attachments():
            if entry.network != net.name or keep is None:
                continue
            if (entry.container_id, entry.ifname) in keep:
                continue
            rt = RuntimeConf(
                container_id=entry.container_id,
                netns=entry.netns,
                ifname=entry.ifname,
                args=tuple(entry.cni_args),
                capability_args=entry.capability_args,
            )
            try:
                self.delete(net, rt)
                removed.append(entry)
            except CNIError as exc:
                errors.append(f"stale attachment {entry.container_id}/{entry.ifname}: {exc}")
        # Plugin GC only with a known valid set: a plugin reading a missing list as "nothing is
        # valid" would tear down every attachment of the network.
        if keep is not None and version_at_least(net.cni_version, "1.1.0"):
            attachments = [
                {"containerID": cid, "ifname": ifname} for cid, ifname in sorted(keep or ())
            ]
            for plugin in net.plugins:
                conf = self._inject(net, plugin)
                # The spec names the key cni.dev/valid-attachments; the first libcni to
                # implement GC sent cni.dev/attachments. Plugins may read either.
                conf["cni.dev/valid-attachments"] = attachments
                conf["cni.dev/attachments"] = attachments
                try:
                    self._exec(plugin, conf, Args(command="GC", path=self._path))
                except CNIError as exc:
                    errors.append(str(exc))
        if errors:
            raise CNIError("; ".join(errors), verb="GC")
        return removed

    def update_plugins(
        self,
        net: NetworkConfigList,
        rt: RuntimeConf,
        verb: str,
        types: set[str],
        *,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        """Run ADD or DEL for just the plugins of ``types``, on top of the cached result.

        For what a runtime decides after the attachment exists — Docker publishes ports only once
        it knows which network is the container's gateway. Afterwards the cache records
        ``record`` (default ``rt.capability_args``) as the attachment's capability args, so a
        later DEL of the whole list undoes exactly what is in place. ADD goes in list order, DEL
        in reverse, as for the whole list.
        """
        validate_container_id(rt.container_id)
        cached = self.cache.read(net.name, rt.container_id, rt.ifname)
        if cached is None or not cached.result:
            raise CNIError(
                f"no cached result for {rt.container_id}/{rt.ifname} in network {net.name!r}",
                verb=verb,
            )
        prev = Result.from_json(cached.result, default_version=net.cni_version)
        plugins = [p for p in net.plugins if p.type in types]
        if verb == "DEL":
            plugins.reverse()
        for plugin in plugins:
            out = self._run(net, plugin, verb, rt, prev)
            if verb == "ADD":
                prev = Result.from_json(
                    decode_json(plugin.type, verb, out), default_version=net.cni_version
                )
        cached.capability_args = dict(rt.capability_args if record is None else record)
        cached.result = prev.convert(net.cni_version).to_json()
        self.cache.write(cached)

    def version_info(self, plugin_type: str) -> VersionInfo:
        """Ask a plugin which spec versions it speaks (the VERSION verb)."""
        stdin = json.dumps({"cniVersion": CURRENT_VERSION}).encode()
        try:
            plugin_path = self.exec.find_in_path(plugin_type, self.path)
            out = self.exec.exec_plugin(
                plugin_path, stdin, Args(command="VERSION", path=self._path).as_env(), self.timeout
            )
            return VersionInfo.from_json(decode_json(plugin_type, "VERSION", out))
        except CNIError as exc:
            raise exc.label(plugin_type, "VERSION")

    def negotiate(self, net: NetworkConfigList) -> NetworkConfigList:
        """Settle the version a list runs at, asking each plugin with VERSION.

        With ``cniVersions`` (1.1.0) the newest version that pycni and every plugin speak wins;
        with a single ``cniVersion`` every plugin must speak it. Raises ConfigError naming the
        plugin that can't.
        """
        infos = {p.type: self.version_info(p.type) for p in net.plugins}
        candidates = [v for v in net.cni_versions if v in SUPPORTED_VERSIONS] or [net.cni_version]
        for version in candidates:
            if all(info.supports(version) for info in infos.values()):
                return net if version == net.cni_version else net.with_version(version)
        lacking = [t for t, info in infos.items() if not info.supports(candidates[0])]
        raise ConfigError(
            f"plugin {lacking[0]!r} does not speak CNI {' or '.join(candidates)} "
            f"(it speaks {', '.join(infos[lacking[0]].supported_versions)})",
            source=net.source,
            field="cniVersions" if net.cni_versions else "cniVersion",
        )

    def validate(self, net: NetworkConfigList) -> set[str]:
        """Every plugin binary exists and speaks the list's version; the chain's capabilities."""
        self.negotiate(net)
        return net.capabilities()

    # --- the cache -------------------------------------------------------------------------------

    def cached_result(self, net: NetworkConfigList, rt: RuntimeConf) -> Result | None:
        """The cached ADD result, converted to the list's version; ``None`` if there is none."""
        entry = self.cache.read(net.name, rt.container_id, rt.ifname)
        if entry is None or not entry.result:
            return None
        return Result.from_json(entry.result, default_version=net.cni_version).convert(
            net.cni_version
        )

    def cached_attachments(self, container_id: str = "") -> list[CachedAttachment]:
        return self.cache.attachments(container_id)

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def _path(self) -> str:
        return ":".join(self.path)

    def _inject(
        self,
        net: NetworkConfigList,
        plugin: PluginConf,
        prev: Result | None = None,
        rt: RuntimeConf | None = None,
    ) -> dict[str, Any]:
        """libcni's buildOneConfig: the plugin's raw config + name, version, prevResult and
        the runtimeConfig for the capabilities it declares (and only those)."""
        conf = copy.deepcopy(plugin.raw)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev.to_json(net.cni_version)
        if rt is not None:
            runtime = {
                cap: rt.capability_args[cap]
                for cap, on in plugin.capabilities.items()
                if on and cap in rt.capability_args
            }
            if runtime:
                conf["runtimeConfig"] = runtime
        return conf

    def _run(
        self,
        net: NetworkConfigList,
        plugin: PluginConf,
        verb: str,
        rt: RuntimeConf,
        prev: Result | None,
    ) -> bytes:
        conf = self._inject(net, plugin, prev, rt)
        args = Args(
            command=verb,
            container_id=rt.container_id,
            netns=rt.netns,
            ifname=rt.ifname,
            plugin_args=tuple(rt.args),
            path=self._path,
        )
        return self._exec(plugin, conf, args)

    def _exec(self, plugin: PluginConf, conf: dict[str, Any], args: Args) -> bytes:
        started = time.monotonic()
        try:
            plugin_path = self.exec.find_in_path(plugin.type, self.path)
            return self.exec.exec_plugin(
                plugin_path, json.dumps(conf).encode(), args.as_env(), self.timeout
            )
        except CNIError as exc:
            raise exc.label(plugin.type, args.command)
        finally:
            log.debug(
                "%s %s %s took %.1f ms",
                plugin.type,
                args.command,
                args.container_id,
                (time.monotonic() - started) * 1000,
            )
