"""Network configuration lists, loaded the way libcni loads them.

A conf dir holds ``*.conflist`` files (a named chain of plugins) and single-plugin ``*.conf`` /
``*.json`` files, which are wrapped into a one-plugin list. Files are read in lexical order and a
network is looked up by its ``name``; the first file with that name wins.

Every plugin config keeps its raw dict, so keys pycni has never heard of reach the plugin unchanged
(libcni's ``buildOneConfig`` injects into the original bytes for the same reason).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InvalidRequest, NotFound
from .types import SUPPORTED_VERSIONS, is_supported, parse_version

CONF_EXTENSIONS = (".conf", ".json")
CONFLIST_EXTENSIONS = (".conflist",)

# The spec's rules for identifiers (SPEC.md "Parameters"; libcni pkg/utils).
# \Z, not $: Python's $ also matches before a trailing newline, Go's does not.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")
_IFNAME_BAD = re.compile(r"[/:\s]")
MAX_IFNAME = 15


def validate_network_name(name: str) -> None:
    if not name:
        raise InvalidRequest("missing network name")
    if not _NAME_RE.match(name):
        raise InvalidRequest(
            f"invalid network name {name!r}: must start with a letter or digit and contain only "
            "letters, digits, '_', '.' and '-'"
        )


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise InvalidRequest("missing container id")
    if not _NAME_RE.match(container_id):
        raise InvalidRequest(
            f"invalid container id {container_id!r}: must start with a letter or digit and "
            "contain only letters, digits, '_', '.' and '-'"
        )


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise InvalidRequest("missing interface name")
    if len(ifname) > MAX_IFNAME:
        raise InvalidRequest(f"interface name {ifname!r} is longer than {MAX_IFNAME} characters")
    if ifname in (".", "..") or _IFNAME_BAD.search(ifname):
        raise InvalidRequest(
            f"invalid interface name {ifname!r}: no '/', ':' or whitespace, and not '.' or '..'"
        )


def validate_plugin_type(plugin_type: str, *, source: str | None = None) -> None:
    """A plugin ``type`` names a binary in CNI_PATH: a bare file name, never a path."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", "..") or "\x00" in plugin_type:
        raise ConfigError(
            f"invalid plugin type {plugin_type!r}: must be a bare executable name (no '/')",
            source=source,
            field="type",
        )


@dataclass
class PluginConf:
    """One plugin's configuration: its raw dict, plus the fields a runtime reads."""

    raw: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.raw["type"])

    @property
    def capabilities(self) -> dict[str, bool]:
        caps = self.raw.get("capabilities") or {}
        return {str(k): bool(v) for k, v in caps.items()} if isinstance(caps, dict) else {}

    def describe(self) -> str:
        name = self.raw.get("name")
        return f'type="{self.type}"' + (f' name="{name}"' if name else "")


@dataclass
class NetworkConfigList:
    """A named chain of plugins: a ``.conflist``, or a ``.conf`` wrapped into one."""

    name: str
    cni_version: str
    plugins: list[PluginConf]
    disable_check: bool = False
    disable_gc: bool = False
    #: every version the file declared it can be run at (``cniVersions``, 1.1.0), newest first
    cni_versions: tuple[str, ...] = ()
    #: the list as a dict, unknown keys included (written into the CNI cache, as libcni does)
    raw: dict[str, Any] = field(default_factory=dict)
    #: where it was read from, for error messages (not part of what the list is)
    source: str | None = field(default=None, compare=False)

    @property
    def bytes(self) -> bytes:
        return json.dumps(self.raw, separators=(",", ":")).encode()

    def with_version(self, version: str) -> NetworkConfigList:
        """A copy to be run at another (negotiated) spec version."""
        clone = copy.deepcopy(self)
        clone.cni_version = version
        clone.raw["cniVersion"] = version
        # Pin it: a stored copy parsed again must not re-pick the newest of cniVersions.
        clone.raw.pop("cniVersions", None)
        clone.cni_versions = ()
        return clone

    def capabilities(self) -> set[str]:
        """Every capability some plugin of the chain declares."""
        return {c for p in self.plugins for c, on in p.capabilities.items() if on}

    def plugin_types(self) -> list[str]:
        return [p.type for p in self.plugins]


def _load_json(data: bytes | str, source: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid JSON: {exc}", source=source) from exc
    if not isinstance(value, dict):
        raise ConfigError("must be a JSON object", source=source)
    return value


def _pick_version(raw: dict[str, Any], source: str) -> tuple[str, tuple[str, ...]]:
    """The version to run at: the newest pycni speaks of ``cniVersions`` + ``cniVersion``.

    ``cniVersions`` (spec 1.1.0) lists every version the config is valid for; a runtime picks the
    newest it supports.
    """
    declared: tuple[str, ...] = ()
    if "cniVersions" in raw:
        versions = raw["cniVersions"]
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise ConfigError("must be a list of version strings", source=source, field="cniVersions")
        for v in versions:
            try:
                parse_version(v)
            except ValueError as exc:
                raise ConfigError(str(exc), source=source, field="cniVersions") from exc
        pool = set(versions)
        if isinstance(raw.get("cniVersion"), str) and is_supported(raw["cniVersion"]):
            # libcni sorts cniVersion in with cniVersions and runs at the newest of them all
            pool.add(raw["cniVersion"])
        declared = tuple(sorted(pool, key=parse_version, reverse=True))
        usable = [v for v in declared if is_supported(v)]
        if usable:
            return usable[0], declared
    version = raw.get("cniVersion")
    if version is None:
        if declared:
            raise ConfigError(
                f"none of {list(declared)} is a version pycni speaks "
                f"({', '.join(SUPPORTED_VERSIONS)})",
                source=source,
                field="cniVersions",
            )
        raise ConfigError("missing", source=source, field="cniVersion")
    if not isinstance(version, str):
        raise ConfigError("must be a string", source=source, field="cniVersion")
    try:
        parse_version(version)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, field="cniVersion") from exc
    if not is_supported(version):
        raise ConfigError(
            f"version {version!r} is not supported; pycni speaks {', '.join(SUPPORTED_VERSIONS)}",
            source=source,
            field="cniVersion",
        )
    return version, declared


def _check_name(raw: dict[str, Any], source: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("missing or not a string", source=source, field="name")
    try:
        validate_network_name(name)
    except InvalidRequest as exc:
        raise ConfigError(str(exc), source=source, field="name") from exc
    return name


def _plugin(raw: Any, source: str, where: str) -> PluginConf:
    if not isinstance(raw, dict):
        raise ConfigError("must be a JSON object", source=source, field=where)
    plugin_type = raw.get("type")
    if not isinstance(plugin_type, str) or not plugin_type:
        raise ConfigError("missing or not a string", source=source, field=f"{where}.type")
    try:
        validate_plugin_type(plugin_type)
    except ConfigError as exc:
        # drop the "network config: type: " that validate_plugin_type put in front
        message = exc.message.split(": ", 2)[-1]
        raise ConfigError(message, source=source, field=f"{where}.type") from exc
    caps = raw.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise ConfigError("must be an object", source=source, field=f"{where}.capabilities")
    return PluginConf(raw=raw)


def conflist_from_dict(raw: dict[str, Any], source: str = "network config") -> NetworkConfigList:
    """Validate a conflist dict (``{"name", "cniVersion", "plugins": [...]}``)."""
    name = _check_name(raw, source)
    version, declared = _pick_version(raw, source)
    plugins = raw.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfigError("missing or empty list", source=source, field="plugins")
    confs = [_plugin(p, source, f"plugins[{n}]") for n, p in enumerate(plugins)]
    for flag in ("disableCheck", "disableGC"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise ConfigError("must be true or false", source=source, field=flag)
    raw = copy.deepcopy(raw)
    raw["cniVersion"] = version
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=[PluginConf(raw=copy.deepcopy(p.raw)) for p in confs],
        disable_check=bool(raw.get("disableCheck", False)),
        disable_gc=bool(raw.get("disableGC", False)),
        cni_versions=declared,
        raw=raw,
        source=source,
    )


def conf_from_dict(raw: dict[str, Any], source: str = "network config") -> NetworkConfigList:
    """Wrap a single-plugin ``.conf`` into a one-plugin list, as libcni's ConfListFromConf does."""
    name = _check_name(raw, source)
    version, declared = _pick_version(raw, source)
    plugin = _plugin(raw, source, "plugin")
    wrapped = {"cniVersion": version, "name": name, "plugins": [copy.deepcopy(plugin.raw)]}
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=[PluginConf(raw=copy.deepcopy(plugin.raw))],
        cni_versions=declared,
        raw=wrapped,
        source=source,
    )


def parse(data: bytes | str, source: str = "network config") -> NetworkConfigList:
    """Parse either form: a dict with ``plugins`` is a list, anything else a single plugin."""
    raw = _load_json(data, source)
    if "plugins" in raw:
        return conflist_from_dict(raw, source)
    return conf_from_dict(raw, source)


def load_file(path: str) -> NetworkConfigList:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=path) from exc
    if path.endswith(CONFLIST_EXTENSIONS):
        return conflist_from_dict(_load_json(data, path), path)
    return conf_from_dict(_load_json(data, path), path)


def config_files(conf_dir: str) -> list[str]:
    """Config files in a conf dir, in lexical order (libcni's ConfFiles + sort)."""
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot list: {exc.strerror}", source=conf_dir) from exc
    exts = CONF_EXTENSIONS + CONFLIST_EXTENSIONS
    return [
        os.path.join(conf_dir, n)
        for n in names
        if n.endswith(exts) and os.path.isfile(os.path.join(conf_dir, n))
    ]


def load_all(conf_dir: str) -> tuple[list[NetworkConfigList], list[ConfigError]]:
    """Every loadable network in a conf dir, and an error for each file that isn't."""
    found: list[NetworkConfigList] = []
    errors: list[ConfigError] = []
    for path in config_files(conf_dir):
        try:
            found.append(load_file(path))
        except ConfigError as exc:
            errors.append(exc)
    return found, errors


def find(conf_dir: str, name: str) -> NetworkConfigList:
    """The network called ``name`` in ``conf_dir``: first match in lexical file order.

    A file that fails to parse is only an error if it might be the one asked for; otherwise one
    broken file would make every network in the directory unusable.
    """
    broken: list[ConfigError] = []
    for path in config_files(conf_dir):
        try:
            conf = load_file(path)
        except ConfigError as exc:
            if _declared_name(path) == name:
                raise  # the very network asked for is broken: say exactly where
            broken.append(exc)
            continue
        if conf.name == name:
            return conf
    hint = ""
    if broken:
        hint = "; files that failed to load: " + "; ".join(str(e) for e in broken)
    raise NotFound(f"no CNI network named {name!r} in {conf_dir}{hint}")


def _declared_name(path: str) -> str | None:
    """The ``name`` a config file declares, if it is readable JSON at all."""
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else None


def names(confs: Iterable[NetworkConfigList]) -> list[str]:
    return [c.name for c in confs]
