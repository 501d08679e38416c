"""pycni's records on disk: one versioned JSON file per record, in a directory per kind (the
driver's networks and endpoints, the none mode's attachments and failed attempts, the overlay's
memberships), each written atomically (:func:`shim.files.atomic_write`, which libcni's cache uses
too), mode 0600 in 0700 directories."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import PycniError, StateError
from .files import atomic_write
from .state import VERSION, ContainerRecord, EndpointRecord, FailureRecord, NetworkRecord

T = TypeVar("T")


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
        try:
            atomic_write(target, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError as exc:
            raise StateError(f"cannot write {target}: {exc.strerror}") from exc

    def _read_all(self, kind: str, prefix: str = "") -> list[dict[str, Any]]:
        try:
            names = sorted(os.listdir(self._dir(kind)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot list {self._dir(kind)}: {exc.strerror}") from exc
        records = []
        for name in names:
            if not name.endswith(".json") or name.startswith(".") or not name.startswith(prefix):
                continue
            path = os.path.join(self._dir(kind), name)
            try:
                with open(path) as f:
                    data = json.load(f)
            except FileNotFoundError:
                continue  # deleted since the listing: a sweep may read while verbs work
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

    # any kind of record (the overlay's: shim.overlay.manager)
    def save(self, kind: str, record_id: str, data: dict[str, Any]) -> None:
        self._write(kind, record_id, data)

    def delete(self, kind: str, record_id: str) -> None:
        """Remove a record, and the kind's directory once it is empty."""
        self._delete(kind, record_id)
        try:
            os.rmdir(self._dir(kind))
        except OSError:
            pass  # not empty, or gone

    def load_all(self, kind: str, build: Callable[[dict[str, Any]], T]) -> list[T]:
        return [_build(build, d) for d in self._read_all(kind)]

    # networks
    def save_network(self, rec: NetworkRecord) -> None:
        self._write("networks", rec.id, rec.to_json())

    def delete_network(self, network_id: str) -> None:
        self._delete("networks", network_id)

    def networks(self) -> list[NetworkRecord]:
        return [_build(NetworkRecord, d) for d in self._read_all("networks")]

    # endpoints
    def save_endpoint(self, rec: EndpointRecord) -> None:
        self._write("endpoints", rec.id, rec.to_json())

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

    def endpoint_ids(self) -> set[str]:
        """The ids of the endpoint records on disk, without reading them."""
        try:
            names = os.listdir(self._dir("endpoints"))
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise StateError(f"cannot list {self._dir('endpoints')}: {exc.strerror}") from exc
        return {n.removesuffix(".json") for n in names
                if n.endswith(".json") and not n.startswith(".")}

    def endpoints(self) -> list[EndpointRecord]:
        return [_build(EndpointRecord, d) for d in self._read_all("endpoints")]


    # attachments of the --network none mode (shim.containers locks per container)
    def save_container(self, rec: ContainerRecord) -> None:
        self._write("containers", rec.id, rec.to_json())

    def delete_container(self, record_id: str) -> None:
        self._delete("containers", record_id)

    def containers(self, container_id: str = "") -> list[ContainerRecord]:
        """Every attachment, or one container's (read by its files' names: ``<id>.*.json``)."""
        prefix = f"{container_id}." if container_id else ""
        return [_build(ContainerRecord, d) for d in self._read_all("containers", prefix)]

    def containers_dir(self) -> str:
        return self._dir("containers")

    # what the controller could not attach (pycni watch; shown by pycni ls)
    def save_failure(self, rec: FailureRecord) -> None:
        self._write("failures", rec.id, rec.to_json())

    def delete_failure(self, container_id: str) -> None:
        self._delete("failures", container_id)

    def failures(self) -> list[FailureRecord]:
        return [_build(FailureRecord, d) for d in self._read_all("failures")]


def _build(cls: Any, data: dict[str, Any]) -> Any:
    """A record from its JSON (``cls.from_json``, or ``cls`` itself called); whatever is wrong
    with it is a StateError naming the record."""
    try:
        return cls.from_json(data) if hasattr(cls, "from_json") else cls(data)
    except (KeyError, TypeError, ValueError, PycniError) as exc:
        what = f"{data.get('kind', 'record')} {data.get('id')!r}"
        raise StateError(f"pycni's {what} record is unusable: {exc!r}") from exc
