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
The args are recorded with the attachment, so CHECK and DEL get what ADD got, even once the
container is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequest

Pairs = tuple[tuple[str, str], ...]

IGNORE_UNKNOWN = ("IgnoreUnknown", "1")
NAMESPACE, NAME, INFRA_CONTAINER_ID = "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID"
#: the keys pycni sets itself, which a user's pairs may not set again
OWN = (IGNORE_UNKNOWN[0], NAMESPACE, NAME, INFRA_CONTAINER_ID)
#: the label compose puts on every container of a project
COMPOSE_PROJECT = "com.docker.compose.project"
DEFAULT_NAMESPACE = "default"
#: the driver-opt of an endpoint (``docker run --network name=NET,driver-opt=cni.args=…``)
ENDPOINT_OPTION = "cni.args"


def identity(name: str, container_id: str, labels: Mapping[str, str],
             namespace: str = DEFAULT_NAMESPACE) -> Pairs:
    """The pairs that say whom the chain serves (without ``IgnoreUnknown``, see :func:`join`)."""
    return ((NAMESPACE, labels.get(COMPOSE_PROJECT) or namespace),
            (NAME, name.lstrip("/")),
            (INFRA_CONTAINER_ID, container_id))


def join(*parts: Pairs) -> Pairs:
    """``IgnoreUnknown=1`` and then ``parts`` in order: what a chain is run with."""
    out: list[tuple[str, str]] = [IGNORE_UNKNOWN]
    for part in parts:
        out.extend(pair for pair in part if pair != IGNORE_UNKNOWN)
    return tuple(out)


def endpoint_args(options: Mapping[str, Any]) -> Pairs:
    """The user's pairs of a driver endpoint (``driver-opt cni.args=…``, which Docker passes
    in CreateEndpoint's options); any other ``cni.`` endpoint option is refused."""
    for key in options:
        if key.startswith("cni.") and key != ENDPOINT_OPTION:
            raise InvalidRequest(f"driver-opt {key}: pycni knows only {ENDPOINT_OPTION} on an "
                                 "endpoint (the network's options are set at network create)")
    value = options.get(ENDPOINT_OPTION, "")
    if not isinstance(value, str):
        raise InvalidRequest(f"driver-opt {ENDPOINT_OPTION} must be a string of KEY=VALUE pairs")
    return parse(value, f"driver-opt {ENDPOINT_OPTION}")


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
        if key in OWN:
            raise InvalidRequest(
                f"{where} {text!r}: pycni sets {key} itself ({', '.join(OWN)} say which "
                "container the chain serves)")
        if any(key == k for k, _ in pairs):
            raise InvalidRequest(f"{where} {text!r}: {key} is given twice")
        pairs.append((key, value))
    return tuple(pairs)
