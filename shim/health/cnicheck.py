"""CNI CHECK of a chain, and the comparisons both ``pycni check`` paths share (an endpoint of
the driver, :mod:`.container`; an attachment of the ``--network none`` mode, :mod:`.attached`).
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Sequence

from .. import plugins
from ..cni import CNI, RuntimeConf
from ..cni.config import NetworkConfigList
from ..cni.types import Result, version_at_least
from ..errors import CNIError, PluginNotFound, PycniError
from .findings import FAIL, OK, SKIP, WARN, Finding


def missing_addresses(expected: Iterable[str], present: Iterable[str]) -> list[str]:
    """Those of ``expected`` (CIDR) not on the link, compared as addresses, not strings."""
    have = {ipaddress.ip_interface(a) for a in present}
    return [a for a in expected if ipaddress.ip_interface(a) not in have]



# --- CNI STATUS ----------------------------------------------------------------------------------


def check_status(chains: Iterable[tuple[str, NetworkConfigList]],
                 status: Callable[[NetworkConfigList], bool]) -> list[Finding]:
    """STATUS of every 1.1.0 chain (``pycni doctor``): a plugin that says it cannot serve ADD
    is a FAIL naming it and what it said; a plugin that does not speak STATUS is no finding."""
    findings = []
    for label, config in chains:
        if not version_at_least(config.cni_version, "1.1.0"):
            continue
        try:
            status(config)
        except PluginNotFound:
            continue  # check_binaries says so
        except CNIError as exc:
            if exc.code in (CNIError.INCOMPATIBLE_VERSION, CNIError.INVALID_ENV):
                continue
            findings.append(Finding(FAIL, label, f"not ready: {exc}",
                                    "ADD is refused until the plugin answers STATUS without "
                                    "an error: see its own logs"))
            continue
        findings.append(Finding(OK, label, "STATUS: every plugin is ready"))
    return findings


# --- CNI CHECK -----------------------------------------------------------------------------------


def run_check(
    cni: CNI,
    config: NetworkConfigList,
    rt: RuntimeConf,
    result: Result,
    subject: str,
    hint: str,
    *,
    add_ifname: str = "eth0",
    moved: bool = False,
    host_addresses: Sequence[str] = (),
) -> list[Finding]:
    """CNI CHECK of the whole chain against ``result``.

    A known limitation (:func:`shim.plugins.known_check_limitation`) is a warning, not a failure,
    and the plugins after the one that hit it are still checked. ``moved``: ADD ran in a
    namespace the link has left since (the driver's staging one).

    ``host_addresses`` are addresses of the result the container carries as host addresses, on
    purpose (:func:`host_addresses`). A plugin that compares the interface's addresses with the
    result (ptp: "Failed to match addr 10.1.0.5/24") can't find them with their prefix; that
    plugin is checked again on its own against the result without them — its interface, MAC and
    routes are still compared — and the chain goes on after it. The addresses themselves were
    compared with the link by :func:`check_endpoint`.
    """
    if not version_at_least(config.cni_version, "0.4.0"):
        return [
            Finding(SKIP, subject, f"CNI CHECK skipped (CNI {config.cni_version} has no CHECK)")
        ]
    if config.disable_check:
        return [Finding(SKIP, subject, "CNI CHECK skipped (the config sets disableCheck)")]
    findings: list[Finding] = []
    remaining = config
    checked = 0
    while remaining.plugins:
        try:
            cni.check(remaining, rt, result=result)
        except CNIError as exc:
            failed_at = _index_of(remaining, exc.plugin)
            narrowed = _host_address_mismatch(exc, host_addresses)
            if narrowed and failed_at is not None:
                try:
                    cni.check(
                        _part(remaining, failed_at, failed_at + 1),
                        rt,
                        result=_without(result, host_addresses),
                    )
                except CNIError as again:
                    message = f"CNI CHECK failed: {describe_plugin_error(again)}"
                    return findings + [Finding(FAIL, subject, message, hint)]
                except PycniError as again:
                    message = f"CNI CHECK could not run: {again}"
                    return findings + [Finding(FAIL, subject, message, hint)]
                checked += failed_at + 1
                host = ipaddress.ip_interface(narrowed)
                message = (
                    f"{exc.plugin} checked without the address {narrowed}: the container "
                    f"carries it as {host.ip}/{host.max_prefixlen}, the host address pycni "
                    "gives a chain that routes its subnet through the gateway"
                )
                findings.append(Finding(OK, subject, message))
                remaining = _part(remaining, failed_at + 1)
                continue
            why = plugins.known_check_limitation(exc, add_ifname=add_ifname, ifname=rt.ifname,
                                                 moved=moved)
            if why is None:
                fix = hint
                if isinstance(exc, PluginNotFound):
                    fix = f"install the plugin into CNI_PATH ({':'.join(cni.path)})"
                message = f"CNI CHECK failed: {describe_plugin_error(exc)}"
                return findings + [Finding(FAIL, subject, message, fix)]
            assert failed_at is not None  # a quirk is always some plugin's own
            checked += failed_at
            findings.append(Finding(WARN, subject, why))
            remaining = _part(remaining, failed_at + 1)
            continue
        except PycniError as exc:  # the runtime parameters themselves (an invalid name, say)
            return findings + [Finding(FAIL, subject, f"CNI CHECK could not run: {exc}", hint)]
        checked += len(remaining.plugins)
        break
    findings.insert(0, Finding(OK, subject, f"CNI CHECK passed ({checked} plugins checked)"))
    return findings


def _index_of(config: NetworkConfigList, plugin: str) -> int | None:
    return next((n for n, p in enumerate(config.plugins) if p.type == plugin), None)


def _part(config: NetworkConfigList, start: int, stop: int | None = None) -> NetworkConfigList:
    """Plugins ``start`` to ``stop`` of the chain (same name and version, so the same cache
    entry)."""
    plugins = config.plugins[start:stop]
    raw = {**config.raw, "plugins": [p.raw for p in plugins]}
    return dataclasses.replace(config, plugins=plugins, raw=raw)


def _host_address_mismatch(exc: CNIError, host_addresses: Sequence[str]) -> str:
    """The host address a plugin's CHECK could not find with the result's prefix ('' if the
    failure is about something else). The wording is libcni's
    ``ip.ValidateExpectedInterfaceIPs``, which ptp, bridge and the other main plugins share."""
    text = f"{exc.msg} {exc.details}"
    return next((a for a in host_addresses if f"Failed to match addr {a} " in text + " "), "")


def _without(result: Result, addresses: Sequence[str]) -> Result:
    trimmed = copy.deepcopy(result)
    trimmed.ips = [ip for ip in trimmed.ips if str(ip.address) not in addresses]
    return trimmed


def describe_plugin_error(exc: CNIError) -> str:
    body = exc.msg
    if exc.code:
        body = f"[code {exc.code}] {body}"
    if exc.details:
        body = f"{body}: {exc.details}"
    return f"{exc.plugin}: {body}" if exc.plugin else body
