"""libcni's result cache, byte-compatible so other CNI tools can read what pycni writes.

One file per attachment, ``<cache_dir>/results/<network>-<containerID>-<ifname>``, holding::

    {"kind": "cniCacheV1", "containerId": ..., "config": <base64 of the network config list>,
     "ifName": ..., "networkName": ..., "netns": ..., "cniArgs": [[k, v], ...],
     "capabilityArgs": {...}, "result": {...}}

The record keeps what ADD was given (CNI_ARGS, capability args) because DEL must see the same:
portmap, for one, removes nothing unless DEL carries the ADD's ``portMappings``.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import StateError
from ..files import atomic_write

KIND = "cniCacheV1"


@dataclass
class CachedAttachment:
    network: str
    container_id: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    #: pycni's note of an ADD whose undo failed part-way (which plugin, why): kept as an extra
    #: key, which libcni and other CNI tools ignore
    undo_failed: str = ""

    def why(self, otherwise: str) -> str:
        """Why gc takes it: its undo failed (naming the plugin), else ``otherwise``."""
        return f"its undo failed ({self.undo_failed})" if self.undo_failed else otherwise

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode(),
            "ifName": self.ifname,
            "networkName": self.network,
        }
        # libcni marshals these with omitempty
        if self.netns:
            out["netns"] = self.netns
        if self.cni_args:
            out["cniArgs"] = [list(p) for p in self.cni_args]
        if self.capability_args:
            out["capabilityArgs"] = self.capability_args
        if self.result:
            out["result"] = self.result
        if self.undo_failed:
            out[UNDO_FAILED] = self.undo_failed
        return out

    @classmethod
    def from_json(cls, data: Any) -> CachedAttachment | None:
        """A record, or ``None`` when the file is not a cniCacheV1 record (libcni skips those)."""
        if not isinstance(data, dict) or data.get("kind") != KIND:
            return None
        try:
            config = base64.b64decode(data.get("config") or "")
        except ValueError:
            config = b""
        args = data.get("cniArgs") or []
        return cls(
            network=str(data.get("networkName") or ""),
            container_id=str(data.get("containerId") or ""),
            ifname=str(data.get("ifName") or ""),
            config=config,
            netns=str(data.get("netns") or ""),
            cni_args=[(str(k), str(v)) for k, v in args if isinstance(k, str)],
            capability_args=dict(data.get("capabilityArgs") or {}),
            result=data.get("result") if isinstance(data.get("result"), dict) else None,
            undo_failed=str(data.get(UNDO_FAILED) or ""),
        )


#: the extra key of :attr:`CachedAttachment.undo_failed`
UNDO_FAILED = "pycniUndoFailed"


class ResultCache:
    def __init__(self, cache_dir: str) -> None:
        self.cache_dir = cache_dir

    @property
    def results_dir(self) -> str:
        return os.path.join(self.cache_dir, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        if not (network and container_id and ifname):
            raise StateError(
                "a cache file path needs network name, container id and interface name "
                f"({network!r}, {container_id!r}, {ifname!r})"
            )
        return os.path.join(self.results_dir, f"{network}-{container_id}-{ifname}")

    def write(self, entry: CachedAttachment) -> None:
        """Write atomically (temp file + rename), mode 0600 in a 0700 directory, as libcni."""
        target = self.path(entry.network, entry.container_id, entry.ifname)
        data = json.dumps(entry.to_json(), separators=(",", ":")).encode()
        try:
            atomic_write(target, data)
        except OSError as exc:
            raise StateError(f"cannot write CNI cache {target}: {exc.strerror}") from exc

    def read(self, network: str, container_id: str, ifname: str) -> CachedAttachment | None:
        """The record, or ``None`` if there is none (or it is unreadable, as libcni treats it)."""
        target = self.path(network, container_id, ifname)
        try:
            with open(target, "rb") as f:
                return CachedAttachment.from_json(json.loads(f.read()))
        except (OSError, ValueError, TypeError):  # TypeError: a field of the wrong JSON type
            return None

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        _unlink(self.path(network, container_id, ifname))

    def attachments(self, container_id: str = "") -> list[CachedAttachment]:
        """Every readable record, optionally for one container (libcni GetCachedAttachments)."""
        try:
            names = sorted(os.listdir(self.results_dir))
        except OSError:
            return []
        found = []
        for name in names:
            if name.startswith(".tmp-"):
                continue
            if container_id and f"-{container_id}-" not in name:
                continue
            try:
                with open(os.path.join(self.results_dir, name), "rb") as f:
                    entry = CachedAttachment.from_json(json.loads(f.read()))
            except (OSError, ValueError, TypeError):
                continue
            if entry is None or not entry.ifname or not entry.network:
                continue
            if container_id and entry.container_id != container_id:
                continue
            found.append(entry)
        return found


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"cannot remove {path}: {exc.strerror}") from exc
