"""Containers Docker could not start while pycni was away, as Docker's restart logic sees
them (:mod:`shim.revive`, ``pycni doctor``), and starting one; through
:func:`shim.dockerview.docker_client`, the one place the Docker SDK is opened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dockerview import docker_client
from .errors import PycniError

#: how Docker writes a time that never happened (``State.StartedAt`` of a container never started)
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class Stopped:
    """An exited container on one of our networks, with what Docker's restart logic reads."""

    id: str
    name: str
    #: ``State.Status``: "exited" for a container that ran once and is not running
    status: str
    #: ``State.Error``: why its last start failed ("" after any start that succeeded)
    error: str
    exit_code: int
    #: ``State.StartedAt`` is a real time: Docker restores only containers started before
    started_before: bool
    #: ``HostConfig.RestartPolicy``: "always", "unless-stopped", "on-failure", "no" or ""
    policy: str
    max_retries: int
    restart_count: int
    #: the names of our networks it is attached to
    networks: tuple[str, ...]


def stopped_containers(driver_name: str = "pycni", timeout: float = 10.0) -> list[Stopped]:
    """Every exited container attached to a network of ``driver_name``.

    Raises PycniError if Docker can't be asked.
    """
    try:
        with docker_client(timeout) as client:
            ours = {n["Id"]: n["Name"] for n in client.api.networks(filters={"driver": driver_name})}
            found = []
            for summary in client.api.containers(all=True, filters={"status": "exited"}):
                attached = (summary.get("NetworkSettings") or {}).get("Networks") or {}
                # A stopped container's endpoint settings may have lost the network id: the
                # network's name (the key) is what it was created with.
                mine = tuple(
                    sorted(
                        name for name, net in attached.items()
                        if (net or {}).get("NetworkID") in ours or name in ours.values()
                    )
                )
                if mine:
                    found.append(_stopped(client.api.inspect_container(summary["Id"]), mine))
    except PycniError as exc:
        raise PycniError(f"cannot list Docker's stopped containers: {exc}") from exc
    return found


def _stopped(data: dict[str, Any], networks: tuple[str, ...]) -> Stopped:
    state = data.get("State") or {}
    policy = (data.get("HostConfig") or {}).get("RestartPolicy") or {}
    return Stopped(
        id=str(data.get("Id") or ""),
        name=str(data.get("Name") or "").lstrip("/"),
        status=str(state.get("Status") or ""),
        error=str(state.get("Error") or ""),
        exit_code=int(state.get("ExitCode") or 0),
        started_before=str(state.get("StartedAt") or ZERO_TIME) != ZERO_TIME,
        policy=str(policy.get("Name") or ""),
        max_retries=int(policy.get("MaximumRetryCount") or 0),
        restart_count=int(data.get("RestartCount") or 0),
        networks=networks,
    )


def start_container(container_id: str, timeout: float = 120.0) -> None:
    """``docker start``: Docker calls the driver (CreateEndpoint, Join) before it answers.

    Raises PycniError with Docker's reason if it can't.
    """
    from docker.errors import APIError
    from docker.errors import NotFound as DockerNotFound

    with docker_client(timeout) as client:
        try:
            client.api.start(container_id)
        except DockerNotFound:
            raise
        except APIError as exc:  # Docker's own words, without the SDK's URL around them
            raise PycniError(str(exc.explanation or exc)) from exc
