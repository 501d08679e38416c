"""``pycni cni``: a cnitool for Python users, with cnitool's verbs, arguments and environment
(``CNI_PATH``, ``NETCONFPATH``, ``CNI_IFNAME``, ``CNI_CONTAINERID``, ``CNI_ARGS``, ``CAP_ARGS``).
Errors exit non-zero with the failing plugin's own message."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import click

from .cli_common import reports_errors
from .cni import CNI, RuntimeConf, find
from .cni.invoke import parse_cni_args
from .errors import InvalidRequest
from .settings import DEFAULT_CACHE_DIR, DEFAULT_CNI_PATH, DEFAULT_CONF_DIR, split_path


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name) or default


def _cni() -> CNI:
    return CNI(
        split_path(_env("CNI_PATH", DEFAULT_CNI_PATH)),
        cache_dir=_env("PYCNI_CACHE_DIR", DEFAULT_CACHE_DIR),
    )


def _conf_dir() -> str:
    return _env("NETCONFPATH", DEFAULT_CONF_DIR)


def _container_id(netns: str) -> str:
    """cnitool's default: ``cnitool-`` + the first 10 bytes of sha512(netns path), in hex."""
    return _env("CNI_CONTAINERID") or "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


def _runtime(netns: str) -> RuntimeConf:
    netns = os.path.abspath(netns)
    caps: Any = {}
    if _env("CAP_ARGS"):
        try:
            caps = json.loads(_env("CAP_ARGS"))
        except ValueError as exc:
            raise InvalidRequest(f"CAP_ARGS is not valid JSON: {exc}") from exc
        if not isinstance(caps, dict):
            raise InvalidRequest("CAP_ARGS must be a JSON object")
    return RuntimeConf(
        container_id=_container_id(netns),
        netns=netns,
        ifname=_env("CNI_IFNAME", "eth0"),
        args=tuple(parse_cni_args(_env("CNI_ARGS"))),
        capability_args=caps,
    )


@click.group("cni")
def cni_group() -> None:
    """Run CNI network configs by hand, as cnitool does.

    \b
    Environment: CNI_PATH (plugin dirs), NETCONFPATH (conf dir), CNI_IFNAME (default eth0),
    CNI_CONTAINERID (default derived from the netns path), CNI_ARGS (K=V;K=V), CAP_ARGS (JSON).
    """


@cni_group.command("add")
@click.argument("netname")
@click.argument("netns")
@reports_errors
def cni_add(netname: str, netns: str) -> None:
    """ADD the network NETNAME to the namespace at NETNS; print the result."""
    result = _cni().add(find(_conf_dir(), netname), _runtime(netns))
    click.echo(json.dumps(result.to_json(), indent=4))


@cni_group.command("check")
@click.argument("netname")
@click.argument("netns")
@reports_errors
def cni_check(netname: str, netns: str) -> None:
    """CHECK the network NETNAME in the namespace at NETNS."""
    _cni().check(find(_conf_dir(), netname), _runtime(netns))


@cni_group.command("del")
@click.argument("netname")
@click.argument("netns")
@reports_errors
def cni_del(netname: str, netns: str) -> None:
    """DEL the network NETNAME from the namespace at NETNS."""
    _cni().delete(find(_conf_dir(), netname), _runtime(netns))


@cni_group.command("status")
@click.argument("netname")
@reports_errors
def cni_status(netname: str) -> None:
    """Ask every plugin of NETNAME whether it is ready (STATUS, CNI 1.1.0)."""
    net = find(_conf_dir(), netname)
    if _cni().status(net):
        click.echo(f"{netname}: ready")
    else:
        click.echo(f"{netname}: CNI {net.cni_version} has no STATUS verb; assuming ready")


@cni_group.command("gc")
@click.argument("netname")
@click.option(
    "--keep",
    multiple=True,
    metavar="CONTAINERID[/IFNAME]",
    help="An attachment still in use (repeatable). Default: those whose netns still exists.",
)
@reports_errors
def cni_gc(netname: str, keep: tuple[str, ...]) -> None:
    """Garbage-collect NETNAME: DEL stale cached attachments, then GC the plugins (1.1.0)."""
    cni = _cni()
    net = find(_conf_dir(), netname)
    if keep:
        valid = set()
        for item in keep:
            cid, _, ifname = item.partition("/")
            valid.add((cid, ifname or "eth0"))
    else:
        valid = {
            (a.container_id, a.ifname)
            for a in cni.cached_attachments()
            if a.network == netname and a.netns and os.path.exists(a.netns)
        }
    for entry in cni.gc(net, valid):
        click.echo(f"removed stale attachment {entry.container_id}/{entry.ifname}")
