"""Everything pycni can be configured with, in one place.

Defaults match what Docker and the CNI ecosystem expect on a Linux host; each can be overridden by
an environment variable (the names cnitool and libcni use, where one exists) or a CLI flag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .files import atomic_write

DEFAULT_CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_STATE_DIR = "/var/lib/pycni"
DEFAULT_SOCKET = "/run/docker/plugins/pycni.sock"
DEFAULT_DRIVER_NAME = "pycni"
#: what ``pycni serve`` runs with, in its state dir, for the commands that run plugins beside it
SERVED = "served.json"
_SERVED_KEYS = ("cni_path", "conf_dir", "cache_dir", "plugin_timeout", "pod_namespace")


@dataclass(frozen=True)
class Settings:
    socket_path: str = DEFAULT_SOCKET
    cni_path: tuple[str, ...] = tuple(DEFAULT_CNI_PATH.split(":"))
    conf_dir: str = DEFAULT_CONF_DIR
    cache_dir: str = DEFAULT_CACHE_DIR
    state_dir: str = DEFAULT_STATE_DIR
    # Upper bound on one plugin execution. The dhcp plugin and IPv6 DAD can take several seconds;
    # a hung plugin must still never hang `docker run`.
    plugin_timeout: float = 60.0
    # Largest request body the API accepts (Docker's requests are a few KiB).
    max_body: int = 1 << 20
    #: the name Docker knows this driver by: the socket file's name for a plugin in
    #: /run/docker/plugins ("pycni"), "pycni:latest" for a managed plugin. Reconciliation asks
    #: Docker for networks of this driver, so it is a setting, never guessed from a path.
    driver_name: str = DEFAULT_DRIVER_NAME
    #: overlay networks (:mod:`shim.overlay`): etcd's URL ("" = no overlays), the TLS files
    #: pycni presents to it, and this host's underlay address ("" = the default route's source)
    etcd: str = ""
    etcd_ca: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    underlay_address: str = ""
    #: K8S_POD_NAMESPACE for containers outside a compose project (:mod:`shim.podargs`)
    pod_namespace: str = "default"
    #: seconds an overlay's subnet lease outlives a pycni that stopped renewing it
    overlay_ttl: int = 24 * 3600
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, served: bool = False,
                 **overrides: object) -> Settings:
        """Settings from ``PYCNI_*`` / ``CNI_PATH`` / ``NETCONFPATH`` variables, then overrides.

        ``served``: what neither sets of the plugin path, conf dir, cache dir and plugin timeout
        is taken from the ``pycni serve`` of the same state dir (:meth:`remember`), so a check
        runs the plugins the server runs."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "CNI_PATH" in env:
            values["cni_path"] = split_path(env["CNI_PATH"])
        if "NETCONFPATH" in env:
            values["conf_dir"] = env["NETCONFPATH"]
        for key, name in (
            ("PYCNI_SOCKET", "socket_path"),
            ("PYCNI_CONF_DIR", "conf_dir"),
            ("PYCNI_CACHE_DIR", "cache_dir"),
            ("PYCNI_STATE_DIR", "state_dir"),
            ("PYCNI_DRIVER_NAME", "driver_name"),
            ("PYCNI_ETCD", "etcd"),
            ("PYCNI_ETCD_CA", "etcd_ca"),
            ("PYCNI_ETCD_CERT", "etcd_cert"),
            ("PYCNI_ETCD_KEY", "etcd_key"),
            ("PYCNI_UNDERLAY_ADDRESS", "underlay_address"),
            ("PYCNI_POD_NAMESPACE", "pod_namespace"),
        ):
            if key in env:
                values[name] = env[key]
        if "PYCNI_PLUGIN_TIMEOUT" in env:
            values["plugin_timeout"] = float(env["PYCNI_PLUGIN_TIMEOUT"])
        if "PYCNI_OVERLAY_TTL" in env:
            values["overlay_ttl"] = int(env["PYCNI_OVERLAY_TTL"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if served:
            state_dir = str(values.get("state_dir") or DEFAULT_STATE_DIR)
            values = {**_served(state_dir), **values}
        return cls(**values)  # type: ignore[arg-type]

    def remember(self) -> None:
        """Write what the commands beside ``pycni serve`` must run plugins with."""
        data = {"cni_path": list(self.cni_path), "conf_dir": self.conf_dir,
                "cache_dir": self.cache_dir, "plugin_timeout": self.plugin_timeout,
                "pod_namespace": self.pod_namespace}
        atomic_write(os.path.join(self.state_dir, SERVED), json.dumps(data, indent=1).encode())


def _served(state_dir: str) -> dict[str, object]:
    try:
        with open(os.path.join(state_dir, SERVED)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}  # no server ran here (yet): the defaults
    found = {k: data[k] for k in _SERVED_KEYS if k in data}
    if "cni_path" in found:
        found["cni_path"] = tuple(found["cni_path"])
    return found


def split_path(value: str) -> tuple[str, ...]:
    """Split a PATH-style string, dropping empty entries."""
    return tuple(p for p in value.split(os.pathsep) if p)
