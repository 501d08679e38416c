"""What Docker itself knows about pycni's networks, endpoints and containers (the docker SDK).

This is the one module that opens the SDK, always through :func:`docker_client`; the SDK's errors
(``DockerException``, ``OSError``) end there, as :class:`~shim.errors.PycniError` —
:class:`~shim.errors.NotFound` for Docker's 404.

* Reconciliation asks :func:`snapshot`: a record Docker has forgotten is a leftover. Docker may be
  down or still starting (pycni is meant to start before it), so the answer can be "unknown"
  (``None``), and callers must then leave things alone.
* ``pycni ls`` and ``pycni inspect`` ask :func:`names`, ``pycni doctor`` :func:`network_names`
  (nothing when Docker can't be asked).
* ``pycni check`` asks :func:`container`, ``pycni doctor`` :func:`ping`; both raise.
* :mod:`shim.revive` and ``pycni doctor`` ask :func:`stopped_containers`, and the reviver
  :func:`start_container`; both raise.
* CreateNetwork asks :func:`networks` (None when Docker can't be asked) which subnets and bridges
  Docker's networks have, so a new network collides with none of them.
* The ``--network none`` mode (:mod:`shim.containers`) asks :func:`target` (raises) where a
  container's namespace and resolv.conf are, and :func:`container_ids` (None when Docker can't be
  asked) which containers still exist.
* ``pycni watch`` (:mod:`shim.watch`) asks :func:`labelled` (raises) which containers carry its
  label, and follows :func:`container_events` (raises when the stream can't be opened or is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NotFound, PycniError

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger(__name__)


@contextmanager
def docker_client(timeout: float = 3.0) -> Iterator[DockerClient]:
    """A Docker SDK client for the dockerd the environment names (``DOCKER_HOST``…), closed after.

    Whatever the SDK raises, opening the client or in the ``with`` block, leaves as
    :class:`~shim.errors.PycniError` with the SDK's message (:class:`~shim.errors.NotFound` for a
    404); callers add what they were doing.
    """
    try:
        import docker
        from docker.errors import DockerException
        from docker.errors import NotFound as DockerNotFound
    except ImportError as exc:  # pragma: no cover - a dependency
        raise PycniError(f"the docker SDK is missing: {exc}") from exc
    try:
        client = docker.from_env(timeout=timeout)  # asks dockerd its API version
    except (DockerException, OSError) as exc:
        raise PycniError(str(exc)) from exc
    try:
        yield client
    except DockerNotFound as exc:
        raise NotFound(str(exc)) from exc
    except (DockerException, OSError) as exc:
        raise PycniError(str(exc)) from exc
    finally:
        client.close()


# --- reconciliation, pycni ls / inspect ----------------------------------------------------------


@dataclass(frozen=True)
class DockerView:
    networks: frozenset[str]
    endpoints: frozenset[str]


def snapshot(driver_name: str = "pycni", timeout: float = 3.0) -> DockerView | None:
    """Network ids with our driver and the endpoint ids attached to them; None if unknown."""
    try:
        with docker_client(timeout) as client:
            networks = client.api.networks(filters={"driver": driver_name})
            endpoints = set()
            for net in networks:
                detail = client.api.inspect_network(net["Id"])
                for attached in (detail.get("Containers") or {}).values():
                    if attached.get("EndpointID"):
                        endpoints.add(attached["EndpointID"])
    except PycniError as exc:
        log.info("Docker's view unavailable (%s); reconciling local state only", exc)
        return None
    return DockerView(frozenset(n["Id"] for n in networks), frozenset(endpoints))


def driver_of(network_ids: Collection[str], timeout: float = 3.0) -> str:
    """The driver name Docker knows the networks ``network_ids`` by (``pycni``, or a managed
    plugin's ``pycni:latest``); "" if Docker has none of them or can't be asked."""
    if not network_ids:
        return ""
    try:
        with docker_client(timeout) as client:
            listed = client.api.networks()
    except PycniError:
        return ""
    return next((str(n.get("Driver") or "") for n in listed if n.get("Id") in network_ids), "")


def network_names(driver_name: str = "pycni", timeout: float = 3.0) -> dict[str, str]:
    """Docker's name for each of our network ids ({} when Docker can't be asked)."""
    try:
        with docker_client(timeout) as client:
            networks = client.api.networks(filters={"driver": driver_name})
    except PycniError:
        return {}
    return {n["Id"]: n["Name"] for n in networks}


# --- CreateNetwork: what a new network must not collide with -------------------------------------


@dataclass(frozen=True)
class DockerNetwork:
    """One of Docker's networks, as far as a new pycni network could collide with it."""

    id: str
    name: str
    driver: str
    #: the subnets Docker's IPAM hands out (a null IPAM's placeholder pool left out)
    subnets: tuple[str, ...] = ()
    #: the Linux bridge of a network of Docker's bridge driver, else ""
    bridge: str = ""


#: moby ``netlabel`` / bridge driver: the option naming a bridge network's Linux bridge
BRIDGE_NAME = "com.docker.network.bridge.name"
_NULL_POOLS = frozenset({"0.0.0.0/0", "::/0"})


def networks(timeout: float = 3.0) -> list[DockerNetwork] | None:
    """Every network Docker has, any driver; None if Docker can't be asked (it may be down or
    still starting: callers then check what they can without it)."""
    try:
        with docker_client(timeout) as client:
            listed = client.api.networks()
    except PycniError as exc:
        log.info("Docker's networks unavailable (%s); not checked against", exc)
        return None
    return [_network(n) for n in listed if isinstance(n, dict)]


def _network(data: dict[str, Any]) -> DockerNetwork:
    ipam = data.get("IPAM") or {}
    subnets = tuple(
        str(c["Subnet"]) for c in ipam.get("Config") or []
        if isinstance(c, dict) and c.get("Subnet") and str(c["Subnet"]) not in _NULL_POOLS
    ) if ipam.get("Driver") != "null" else ()
    net_id, driver = str(data.get("Id") or ""), str(data.get("Driver") or "")
    bridge = ""
    if driver == "bridge":
        # Docker names a bridge network's bridge br-<id[:12]> unless told a name (docker0 is
        # the default network's, told by the daemon)
        bridge = str((data.get("Options") or {}).get(BRIDGE_NAME) or f"br-{net_id[:12]}")
    return DockerNetwork(net_id, str(data.get("Name") or ""), driver, subnets, bridge)


@dataclass(frozen=True)
class Container:
    """A container Docker lists on one of our networks."""

    id: str
    name: str


@dataclass(frozen=True)
class Names:
    """The names Docker knows what pycni keeps by id under."""

    #: network id → the network's name
    networks: dict[str, str] = field(default_factory=dict)
    #: endpoint id → the container attached through it
    endpoints: dict[str, Container] = field(default_factory=dict)


def names(driver_name: str = "pycni", timeout: float = 3.0) -> Names:
    """Docker's names for our networks and the containers on them (empty when Docker can't be
    asked: callers show ids alone then)."""
    try:
        with docker_client(timeout) as client:
            networks = client.api.networks(filters={"driver": driver_name})
            endpoints = {}
            for net in networks:
                detail = client.api.inspect_network(net["Id"])
                for cid, attached in (detail.get("Containers") or {}).items():
                    if attached.get("EndpointID"):
                        name = str(attached.get("Name") or "")
                        endpoints[attached["EndpointID"]] = Container(cid, name)
    except PycniError:
        return Names()
    return Names({n["Id"]: n["Name"] for n in networks}, endpoints)


@dataclass(frozen=True)
class Owner:
    """The container an endpoint serves."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)


def endpoint_owner(network_id: str, endpoint_id: str, timeout: float = 3.0) -> Owner | None:
    """The container of a driver endpoint, asked at Join: Docker has stored the endpoint by then,
    named after its container (CreateEndpoint comes before, and nothing names the container
    there). None if Docker can't be asked or doesn't say."""
    try:
        with docker_client(timeout) as client:
            attached = (client.api.inspect_network(network_id).get("Containers") or {}).values()
            name = next((str(a.get("Name") or "") for a in attached
                         if a.get("EndpointID") == endpoint_id), "")
            listed = client.api.containers(all=True, filters={"name": f"^/{name}$"}) if name else []
    except PycniError as exc:
        log.warning("cannot ask Docker which container endpoint %s serves: %s", endpoint_id[:12],
                    exc)
        return None
    if len(listed) != 1:
        return None
    labels = listed[0].get("Labels") or {}
    return Owner(str(listed[0]["Id"]), name, {str(k): str(v) for k, v in labels.items()})


# --- pycni check / doctor ------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One of a container's endpoints on a pycni network, as Docker reports it."""

    network: str
    network_id: str
    endpoint_id: str


@dataclass(frozen=True)
class ContainerView:
    """What ``docker inspect`` says about a container's networking."""

    id: str
    name: str
    running: bool
    sandbox_key: str
    endpoints: tuple[Endpoint, ...] = ()


def container(ref: str, driver_name: str = "pycni", timeout: float = 10.0) -> ContainerView:
    """The container ``ref`` (name or id) and its endpoints on networks of ``driver_name``.

    Raises NotFound if Docker has no such container, PycniError if Docker can't be asked.
    """
    try:
        with docker_client(timeout) as client:
            data = client.api.inspect_container(ref)
            settings = data.get("NetworkSettings") or {}
            endpoints = []
            for name, net in sorted((settings.get("Networks") or {}).items()):
                network_id = net.get("NetworkID") or ""
                if network_id and _driver_of(client, network_id) == driver_name:
                    endpoints.append(Endpoint(name, network_id, net.get("EndpointID") or ""))
    except NotFound as exc:
        raise NotFound(f"Docker has no container {ref!r}") from exc
    except PycniError as exc:
        raise PycniError(f"cannot inspect container {ref!r}: {exc}") from exc
    return ContainerView(
        id=str(data.get("Id") or ""),
        name=str(data.get("Name") or ref).lstrip("/"),
        running=bool((data.get("State") or {}).get("Running")),
        sandbox_key=str(settings.get("SandboxKey") or ""),
        endpoints=tuple(endpoints),
    )


def _driver_of(client: DockerClient, network_id: str) -> Any:
    """The network's driver; None if the network is gone meanwhile."""
    from docker.errors import NotFound as DockerNotFound

    try:
        return client.api.inspect_network(network_id).get("Driver")
    except DockerNotFound:
        return None


def ping(timeout: float = 3.0) -> None:
    """Returns if dockerd answers; raises PycniError with the SDK's reason if not."""
    with docker_client(timeout) as client:
        client.ping()


# --- the --network none mode (shim.containers) ---------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A container pycni attaches to itself: where its namespace and its resolv.conf are."""

    id: str
    name: str
    running: bool
    #: its main process on the host (0 when it isn't running)
    pid: int
    #: the host path of the resolv.conf Docker bind-mounts into it ("" if none)
    resolv_conf: str
    #: ``HostConfig.NetworkMode``: "none" for the containers this mode serves
    network_mode: str
    #: ``Config.Labels`` (``pycni watch`` reads ``pycni.networks`` and the others there)
    labels: dict[str, str] = field(default_factory=dict)


def target(ref: str, timeout: float = 10.0) -> Target:
    """The container ``ref`` (name or id). Raises NotFound if Docker has none, PycniError if
    Docker can't be asked."""
    try:
        with docker_client(timeout) as client:
            data = client.api.inspect_container(ref)
    except NotFound as exc:
        raise NotFound(f"Docker has no container {ref!r}") from exc
    except PycniError as exc:
        raise PycniError(f"cannot inspect container {ref!r}: {exc}") from exc
    state = data.get("State") or {}
    return Target(
        id=str(data.get("Id") or ""),
        name=str(data.get("Name") or ref).lstrip("/"),
        running=bool(state.get("Running")),
        pid=int(state.get("Pid") or 0),
        resolv_conf=str(data.get("ResolvConfPath") or ""),
        network_mode=str((data.get("HostConfig") or {}).get("NetworkMode") or ""),
        labels={str(k): str(v) for k, v in ((data.get("Config") or {}).get("Labels") or {}).items()},
    )


def container_ids(timeout: float = 10.0) -> dict[str, str] | None:
    """Every container Docker has, running or not: id → name; None if Docker can't be asked."""
    try:
        with docker_client(timeout) as client:
            listed = client.api.containers(all=True)
    except PycniError as exc:
        log.info("Docker's containers unavailable (%s)", exc)
        return None
    return {
        str(c["Id"]): str((c.get("Names") or ["/"])[0]).lstrip("/")
        for c in listed if isinstance(c, dict) and c.get("Id")
    }


def labelled(label: str, timeout: float = 10.0) -> set[str]:
    """The ids of every container, running or not, that has the label ``label``.

    Raises PycniError if Docker can't be asked."""
    try:
        with docker_client(timeout) as client:
            listed = client.api.containers(all=True, filters={"label": label})
    except PycniError as exc:
        raise PycniError(f"cannot list Docker's containers: {exc}") from exc
    return {str(c["Id"]) for c in listed if isinstance(c, dict) and c.get("Id")}


#: the container events after which its namespace may differ (a restart is a die and a start)
LIFECYCLE = ("start", "die", "destroy", "restart")


@contextmanager
def container_events(label: str, timeout: float = 10.0,
                     also: Callable[[str], bool] = lambda cid: False,
                     ) -> Iterator[Iterator[tuple[str, str]]]:
    """Docker's event stream, opened: (container id, action) of each :data:`LIFECYCLE` event of
    a container that has the label ``label`` (or for whose id ``also`` says yes), from now on.
    The stream ends, or raises PycniError, when it is lost (dockerd stopped or restarted); it is
    closed when the ``with`` block ends."""
    with docker_client(timeout) as client:
        # only what changes a namespace: not exec_*, attach, health_status…, each of which
        # would make the controller look again (and retry a failed container) for nothing
        stream = client.api.events(decode=True, filters={
            "type": "container", "event": list(LIFECYCLE)})

        def items() -> Iterator[tuple[str, str]]:
            for event in stream:
                if not isinstance(event, dict):
                    continue
                actor = event.get("Actor") or {}
                cid = str(event.get("id") or actor.get("ID") or "")
                action = str(event.get("Action") or event.get("status") or "")
                if not cid or not action:
                    continue
                if label in (actor.get("Attributes") or {}) or also(cid):
                    yield cid, action

        try:
            yield items()
        finally:
            stream.close()
