"""What Docker itself knows about pycni's networks and endpoints (through the docker SDK).

Used only by reconciliation: a record Docker has forgotten is a leftover. Docker may be down or
still starting (pycni is meant to start before it), so every question here can be answered
"unknown" (``None``), and callers must then leave things alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DockerView:
    networks: frozenset[str]
    endpoints: frozenset[str]


def snapshot(driver_name: str = "pycni", timeout: float = 3.0) -> DockerView | None:
    """Network ids with our driver and the endpoint ids attached to them; None if unknown."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - a dependency, but reconciliation must not crash
        return None
    try:
        client = docker.from_env(timeout=timeout)
        try:
            networks = client.api.networks(filters={"driver": driver_name})
            endpoints = set()
            for net in networks:
                detail = client.api.inspect_network(net["Id"])
                for attached in (detail.get("Containers") or {}).values():
                    if attached.get("EndpointID"):
                        endpoints.add(attached["EndpointID"])
            return DockerView(frozenset(n["Id"] for n in networks), frozenset(endpoints))
        finally:
            client.close()
    except (DockerException, OSError) as exc:
        log.info("Docker's view unavailable (%s); reconciling local state only", exc)
        return None


def network_names(driver_name: str = "pycni", timeout: float = 3.0) -> dict[str, str]:
    """Docker's name for each of our network ids ({} when Docker can't be asked)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover
        return {}
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return {n["Id"]: n["Name"] for n in client.api.networks(filters={"driver": driver_name})}
        finally:
            client.close()
    except (DockerException, OSError):
        return {}
