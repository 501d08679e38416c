"""What pycni must remember across restarts, one small JSON file per record.

Docker sends CreateNetwork once and never again, even after either side restarts, so a network's
record (Docker's request as received, plus the CNI config it resolved to) is the only way a
restarted ``pycni serve`` can serve it. An endpoint's record holds everything DEL needs: the config
ADD ran with, the CNI_ARGS and capability args, the result, and where its links are.

Layout under the state dir (default ``/var/lib/pycni``)::

    networks/<network id>.json     {"version": 1, "kind": "network", ...}
    endpoints/<endpoint id>.json   {"version": 1, "kind": "endpoint", ...}

Files are written like libcni's cache: a temp file in the same directory, then ``os.replace``,
mode 0600 — a crash of pycni leaves either the old record or the new one, never half of one.
(No fsync, as libcni: after a power loss the namespaces and links a record describes are gone
too, and reconciliation starts from libcni's cache and the host.)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import StateError

VERSION = 1


@dataclass
class NetworkRecord:
    id: str
    #: Docker's CreateNetwork request, exactly as received
    request: dict[str, Any]
    #: the resolved CNI network config list (raw dict) endpoints are made from
    config: dict[str, Any]
    #: "zero-config" (pycni's bridge chain) or "conflist" (-o cni.network=NAME)
    mode: str
    #: "docker" when Docker's IPAM picks addresses, "cni" when the chain's IPAM does
    ipam: str
    #: how Docker's address reaches the chain: "config" (static addresses), "ips"
    #: (runtimeConfig capability), "args" (CNI_ARGS IP=), or "" (CNI IPAM chooses)
    address_via: str = ""
    #: host links pycni created for this network and removes with it (e.g. the bridge)
    owned_links: list[str] = field(default_factory=list)
    #: per-network iptables rules pycni installed (shim.firewall): bridge, subnets, internal
    firewall: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    version: int = VERSION
    kind: str = "network"


@dataclass
class EndpointRecord:
    id: str
    network_id: str
    #: the staging netns name (``pycni-`` + 12 hex) and the container-side interface name in it
    netns: str
    ifname: str
    #: the temporary host name of the container-side link between CreateEndpoint and Join
    host_ifname: str
    #: "creating" → "ready" → "joined" → "deleting"; a crash leaves the phase it died in
    phase: str = "creating"
    request: dict[str, Any] = field(default_factory=dict)
    #: the exact config list ADD ran with (DEL runs with the same, whatever the files say now)
    config: dict[str, Any] = field(default_factory=dict)
    cni_args: list[list[str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    mac: str = ""
    addresses: list[str] = field(default_factory=list)
    #: the routes through the interface as the chain left them in the staging netns (moving the
    #: link to the container loses them; Join hands them to Docker)
    routes: list[dict[str, str]] = field(default_factory=list)
    sandbox_key: str = ""
    created: float = field(default_factory=time.time)
    version: int = VERSION
    kind: str = "endpoint"


class Store:
    """Records on disk. Not locked: the driver serializes writes per network."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _dir(self, kind: str) -> str:
        return os.path.join(self.root, kind)

    def _path(self, kind: str, record_id: str) -> str:
        if not record_id or "/" in record_id or record_id.startswith("."):
            raise StateError(f"invalid record id {record_id!r}")
        return os.path.join(self._dir(kind), record_id + ".json")

    def _write(self, kind: str, record_id: str, data: dict[str, Any]) -> None:
        target = self._path(kind, record_id)
        directory = os.path.dirname(target)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise StateError(f"cannot write {target}: {exc.strerror}") from exc

    def _read_all(self, kind: str) -> list[dict[str, Any]]:
        try:
            names = sorted(os.listdir(self._dir(kind)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot list {self._dir(kind)}: {exc.strerror}") from exc
        records = []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(self._dir(kind), name)
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError) as exc:
                raise StateError(f"cannot read {path}: {exc}") from exc
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise StateError(f"{path}: not a version {VERSION} pycni record")
            records.append(data)
        return records

    def _delete(self, kind: str, record_id: str) -> None:
        try:
            os.unlink(self._path(kind, record_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StateError(f"cannot remove {kind} record {record_id}: {exc.strerror}") from exc

    # networks
    def save_network(self, rec: NetworkRecord) -> None:
        self._write("networks", rec.id, asdict(rec))

    def delete_network(self, network_id: str) -> None:
        self._delete("networks", network_id)

    def networks(self) -> list[NetworkRecord]:
        return [_build(NetworkRecord, d) for d in self._read_all("networks")]

    # endpoints
    def save_endpoint(self, rec: EndpointRecord) -> None:
        self._write("endpoints", rec.id, asdict(rec))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._delete("endpoints", endpoint_id)

    def load_endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        try:
            with open(self._path("endpoints", endpoint_id)) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read endpoint record {endpoint_id}: {exc}") from exc
        rec: EndpointRecord = _build(EndpointRecord, data)
        return rec

    def endpoints(self) -> list[EndpointRecord]:
        return [_build(EndpointRecord, d) for d in self._read_all("endpoints")]


def _build(cls: Any, data: dict[str, Any]) -> Any:
    known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
    try:
        return cls(**known)
    except TypeError as exc:
        raise StateError(f"{data.get('kind', 'record')} {data.get('id')!r}: {exc}") from exc
