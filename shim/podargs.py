"""What pycni tells a chain about the container it serves, in ``CNI_ARGS``, as the runtimes
plugins are written for do.

Kubernetes (and cri-dockerd, podman, containerd's CRI) pass every plugin the pod it serves::

    IgnoreUnknown=1;K8S_POD_NAMESPACE=<ns>;K8S_POD_NAME=<name>;K8S_POD_INFRA_CONTAINER_ID=<id>

Plugins written for them learn whom they serve from these: dnsname names its hosts entries
after ``K8S_POD_NAME`` and removes them by it at DEL. pycni passes the container's name, its
id, and as namespace its compose project (the label compose sets), else a default
(``PYCNI_POD_NAMESPACE``, ``default``). ``IgnoreUnknown=1`` lets plugins that know none of
these keys accept them (``types.LoadArgs``).

A user adds pairs of their own per container - ``pycni run --arg``, ``pycni attach --arg``,
the ``pycni.args`` label, and in driver mode ``--network name=NET,driver-opt=cni.args=K=V;…``
or compose's ``driver_opts`` - all read by :func:`parse`, with one wording for what it refuses.
(Docker's CLI lowercases a driver-opt, key and value: compose and the API keep their case.)
The args are recorded with the attachment, so CHECK and DEL get what ADD got, even once the
container is gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import dockerview
from .errors import InvalidRequest
from .settings import Settings

Pairs = tuple[tuple[str, str], ...]

IGNORE_UNKNOWN = ("IgnoreUnknown", "1")
NAMESPACE, NAME, INFRA_CONTAINER_ID = "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID"
#: the keys pycni sets itself, which a user's pairs may not set again
OWN = (IGNORE_UNKNOWN[0], NAMESPACE, NAME, INFRA_CONTAINER_ID)
#: the label compose puts on every container of a project
COMPOSE_PROJECT = "com.docker.compose.project"
DEFAULT_NAMESPACE = "default"
#: the driver-opts of an endpoint (``docker run --network name=NET,driver-opt=cni.args=…``)
ENDPOINT_OPTION, CAPS_OPTION = "cni.args", "cni.caps"
#: the capability args pycni fills itself, from Docker's request or pycni's own flags
OWN_CAPS = {"portMappings": "-p", "ips": "--ip", "mac": "--mac-address"}


def identity(name: str, container_id: str, labels: Mapping[str, str],
             namespace: str = DEFAULT_NAMESPACE) -> Pairs:
    """The pairs that say whom the chain serves (without ``IgnoreUnknown``, see :func:`join`)."""
    return ((NAMESPACE, labels.get(COMPOSE_PROJECT) or namespace),
            (NAME, name.lstrip("/")),
            (INFRA_CONTAINER_ID, container_id))


def with_identity(args: Pairs, who: Pairs) -> Pairs:
    """``args`` serving ``who`` now (:func:`identity`; ``()`` when unknown): what they said of
    an earlier container goes."""
    return join(who, tuple(pair for pair in args if pair[0] not in OWN))


def asking_docker(settings: Settings) -> Callable[[str, str], Pairs]:
    """(network id, endpoint id) → :func:`identity` of the container Docker says the endpoint
    serves (:func:`shim.dockerview.endpoint_owner`, at Join); ``()`` if Docker doesn't say."""
    def identify(network_id: str, endpoint_id: str) -> Pairs:
        owner = dockerview.endpoint_owner(network_id, endpoint_id)
        return () if owner is None else identity(owner.name, owner.id, owner.labels,
                                                 settings.pod_namespace)
    return identify


def join(*parts: Pairs) -> Pairs:
    """``IgnoreUnknown=1`` and then ``parts`` in order: what a chain is run with."""
    out: list[tuple[str, str]] = [IGNORE_UNKNOWN]
    for part in parts:
        out.extend(pair for pair in part if pair != IGNORE_UNKNOWN)
    return tuple(out)


def endpoint_options(options: Mapping[str, Any]) -> tuple[Pairs, dict[str, Any]]:
    """The user's CNI_ARGS and capability args of a driver endpoint (``driver-opt cni.args=…``
    and ``cni.caps=…``, which Docker passes in CreateEndpoint's options); any other ``cni.``
    endpoint option is refused."""
    for key in options:
        if key.startswith("cni.") and key not in (ENDPOINT_OPTION, CAPS_OPTION):
            raise InvalidRequest(f"driver-opt {key}: pycni knows {ENDPOINT_OPTION} and "
                                 f"{CAPS_OPTION} on an endpoint (the network's options are set "
                                 "at network create)")
    args, caps = options.get(ENDPOINT_OPTION, ""), options.get(CAPS_OPTION, "")
    if not isinstance(args, str) or not isinstance(caps, str):
        raise InvalidRequest(f"driver-opts {ENDPOINT_OPTION} and {CAPS_OPTION} are strings")
    return (parse(args, f"driver-opt {ENDPOINT_OPTION}"),
            parse_caps(caps, f"driver-opt {CAPS_OPTION}"))


def parse_caps(text: str, where: str) -> dict[str, Any]:
    """A user's capability args: a JSON object keyed by capability, such as
    ``{"bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}}``; libcni hands each
    only to the plugins whose config declares it."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        value = exc
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"{where} {text!r}: not a JSON object; capability args are a JSON object keyed by "
            'capability, such as {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}}')
    for key in value:
        own = _owned(key, OWN_CAPS)
        if own:
            raise InvalidRequest(f"{where} {text!r}: pycni fills {own} itself (from "
                                 f"{OWN_CAPS[own]})")
    return value


def parse(text: str, where: str) -> Pairs:
    """A user's per-container CNI_ARGS: ``KEY=VALUE`` pairs separated by ``;``. ``where`` names
    the flag, label or option they came from, for the error."""
    pairs: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(";")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or "=" in value or not key.replace("_", "").isalnum():
            raise InvalidRequest(
                f"{where} {text!r}: {item!r} is not KEY=VALUE; CNI_ARGS are KEY=VALUE pairs "
                "separated by ';', keys of letters, digits and '_', values without '=' or ';'")
        own = _owned(key, OWN)
        if own:
            raise InvalidRequest(
                f"{where} {text!r}: pycni sets {own} itself ({', '.join(OWN)} say which "
                "container the chain serves)")
        if any(key == k for k, _ in pairs):
            raise InvalidRequest(f"{where} {text!r}: {key} is given twice")
        pairs.append((key, value))
    return tuple(pairs)


def _owned(key: str, own: Iterable[str]) -> str:
    """Which of ``own`` (the keys pycni sets itself) ``key`` is, in any case - Docker's CLI
    lowercases driver-opts; "" if none."""
    return next((k for k in own if k.lower() == key.lower()), "")
