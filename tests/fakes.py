"""A fake plugin executor for unit tests: libcni's ``pkg/invoke/fakes`` idea in Python.

:class:`FakeExec` implements :class:`shim.cni.invoke.Exec`, the seam :class:`shim.cni.CNI` runs
every plugin through. Nothing is patched: a test builds a ``FakeExec``, tells it how each
``(plugin, CNI_COMMAND)`` answers, passes it as ``CNI(path, exec=fake)`` and afterwards reads
:attr:`FakeExec.calls`::

    fake = FakeExec()
    fake.on("bridge", "ADD", add_interface("eth0", "10.1.0.5/24", sandbox="/run/netns/x"))
    fake.on("portmap", "ADD", CNIError("no iptables", code=11))
    cni = CNI(["/opt/cni/bin"], exec=fake, cache_dir=str(tmp_path))
    ...
    assert fake.commands() == [("bridge", "ADD"), ("portmap", "ADD")]

A response is one of

* ``bytes`` (or ``str``): the plugin's stdout, returned as is;
* a :class:`CNIError` instance: raised, as :class:`RawExec` raises a failed plugin's error;
* a callable ``(stdin_json, cni_env) -> bytes``: computes stdout from what the plugin was given.

Unconfigured pairs fall back to defaults that make chains work without set-up: ADD passes its
``prevResult`` through (or answers an empty result in the config's version), VERSION claims every
version pycni speaks, and DEL / CHECK / STATUS / GC succeed silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from shim.cni.types import SUPPORTED_VERSIONS
from shim.errors import CNIError, PluginNotFound

#: How a fake plugin computes its stdout from its stdin config and its ``CNI_*`` environment.
Behaviour: TypeAlias = Callable[[dict[str, Any], Mapping[str, str]], bytes]
#: What a fake plugin answers: stdout, an error to raise, or a behaviour.
Response: TypeAlias = bytes | str | CNIError | Behaviour


@dataclass
class Call:
    """One recorded plugin execution."""

    plugin: str
    command: str
    #: the network config the plugin got on stdin, parsed
    stdin: dict[str, Any]
    #: the ``CNI_*`` variables of its environment
    env: dict[str, str]
    #: its whole environment (``os.environ`` + ``CNI_*``)
    full_env: dict[str, str] = field(repr=False, default_factory=dict)
    plugin_path: str = ""
    timeout: float = 0.0


def passthrough_add(stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
    """ADD as a chained plugin that changes nothing (tuning, portmap): answer ``prevResult``.

    The answer is in the config's ``cniVersion``, as a real plugin converts its result; the first
    plugin of a chain (no ``prevResult``) answers an empty result.
    """
    result = dict(stdin.get("prevResult") or {})
    result["cniVersion"] = stdin["cniVersion"]
    return json.dumps(result).encode()


def add_interface(
    name: str,
    address: str,
    *,
    sandbox: str | None = None,
    mac: str = "",
    gateway: str | None = None,
    routes: Sequence[dict[str, Any]] = (),
    version: str | None = None,
) -> Behaviour:
    """An ADD that appends one interface (and one ``ips`` entry on it) to ``prevResult``.

    ``sandbox`` defaults to ``CNI_NETNS``; ``version`` is the ``cniVersion`` the plugin answers in
    (default: the config's), to exercise runtimes converting results between versions.
    """

    def behaviour(stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        prev = stdin.get("prevResult") or {}
        interfaces = list(prev.get("interfaces") or [])
        iface: dict[str, Any] = {"name": name}
        if mac:
            iface["mac"] = mac
        iface["sandbox"] = env.get("CNI_NETNS", "") if sandbox is None else sandbox
        interfaces.append(iface)
        ip: dict[str, Any] = {"address": address, "interface": len(interfaces) - 1}
        if gateway:
            ip["gateway"] = gateway
        result = {
            "cniVersion": version or stdin["cniVersion"],
            "interfaces": interfaces,
            "ips": list(prev.get("ips") or []) + [ip],
            "routes": list(prev.get("routes") or []) + list(routes),
            "dns": prev.get("dns") or {},
        }
        return json.dumps(result).encode()

    return behaviour


def version_answer(*versions: str, current: str | None = None) -> bytes:
    """A VERSION answer claiming ``versions`` (default: every version pycni speaks)."""
    supported = list(versions or SUPPORTED_VERSIONS)
    return json.dumps(
        {"cniVersion": current or supported[-1], "supportedVersions": supported}
    ).encode()


def _default(command: str) -> Response:
    if command == "ADD":
        return passthrough_add
    if command == "VERSION":
        return version_answer()
    return b""


class FakeExec:
    """An :class:`~shim.cni.invoke.Exec` that runs no process: it records and answers.

    ``missing`` names plugins :meth:`find_in_path` cannot find (it raises
    :class:`PluginNotFound`, as the real search does); every other name is "found" in the first
    directory of the path.
    """

    def __init__(self, *, missing: Iterable[str] = ()) -> None:
        self.calls: list[Call] = []
        self.missing: set[str] = set(missing)
        self._responses: dict[tuple[str, str], Response] = {}

    def on(self, plugin: str, command: str, response: Response) -> FakeExec:
        """Answer ``command`` of ``plugin`` with ``response`` from now on; returns self."""
        self._responses[(plugin, command)] = response
        return self

    # --- the Exec protocol -----------------------------------------------------------------------

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        if plugin in self.missing or not paths:
            raise PluginNotFound(
                f"failed to find plugin {plugin!r} in path {list(paths)}", plugin=plugin
            )
        return os.path.join(paths[0], plugin)

    def exec_plugin(
        self, plugin_path: str, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> bytes:
        plugin = os.path.basename(plugin_path)
        command = env.get("CNI_COMMAND", "")
        config = json.loads(stdin)
        cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
        self.calls.append(
            Call(
                plugin=plugin,
                command=command,
                stdin=config,
                env=cni_env,
                full_env=dict(env),
                plugin_path=plugin_path,
                timeout=timeout,
            )
        )
        response = self._responses.get((plugin, command), _default(command))
        if isinstance(response, CNIError):
            raise response
        if isinstance(response, bytes):
            return response
        if isinstance(response, str):
            return response.encode()
        return response(config, cni_env)

    # --- reading the record ----------------------------------------------------------------------

    def commands(self) -> list[tuple[str, str]]:
        """``(plugin, command)`` of every call, in order."""
        return [(c.plugin, c.command) for c in self.calls]

    def calls_for(self, command: str, plugin: str | None = None) -> list[Call]:
        """The calls of one verb (and optionally one plugin), in order."""
        return [
            c for c in self.calls if c.command == command and (plugin is None or c.plugin == plugin)
        ]

    def reset(self) -> None:
        """Forget the recorded calls (responses stay)."""
        self.calls.clear()


def cni_args(env: Mapping[str, str]) -> dict[str, str]:
    """``CNI_ARGS`` as a dict (``"IgnoreUnknown=1;IP=10.1.0.5"`` → ``{"IgnoreUnknown": "1", ...}``)."""
    pairs = (item.partition("=") for item in env.get("CNI_ARGS", "").split(";") if item)
    return {key: value for key, _, value in pairs}


def requested_addresses(stdin: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """The addresses the runtime asked the chain's IPAM for, wherever it put them.

    In the order a plugin honours them: the ``ips`` capability (``runtimeConfig.ips``), CNI_ARGS
    ``IP=`` (comma-separated; host-local takes bare addresses, static CIDRs), then static IPAM's
    ``ipam.addresses``. Empty when the IPAM is left to choose.
    """
    runtime = stdin.get("runtimeConfig") or {}
    if runtime.get("ips"):
        return [str(a) for a in runtime["ips"]]
    arg = cni_args(env).get("IP")
    if arg:
        return [a for a in arg.split(",") if a]
    ipam = stdin.get("ipam") or {}
    return [str(a["address"]) for a in ipam.get("addresses") or [] if isinstance(a, dict)]
