"""The commands of the ``--network none`` mode: ``pycni attach``, ``detach``, ``run`` and
``watch`` (:mod:`shim.containers`, :mod:`shim.runner`, :mod:`shim.watch`)."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from .cli_common import F, log_level_option, reports_errors, setup_logging
from .settings import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CNI_PATH,
    DEFAULT_CONF_DIR,
    DEFAULT_STATE_DIR,
    Settings,
    split_path,
)


def _mode_options(func: F) -> F:
    for option in reversed((
        click.option("--state-dir", default=None,
                     help=f"pycni's records (default {DEFAULT_STATE_DIR})."),
        click.option("--conf-dir", default=None,
                     help=f"CNI conf dir (default {DEFAULT_CONF_DIR}, or NETCONFPATH)."),
        click.option("--cni-path", default=None,
                     help=f"Plugin dirs (default {DEFAULT_CNI_PATH}, or CNI_PATH)."),
        click.option("--cache-dir", default=None,
                     help=f"libcni cache (default {DEFAULT_CACHE_DIR})."),
    )):
        func = option(func)
    return func


def _mode(state_dir: str | None, conf_dir: str | None, cni_path: str | None,
          cache_dir: str | None) -> Any:
    return _containers(Settings.from_env(
        state_dir=state_dir, conf_dir=conf_dir,
        cni_path=split_path(cni_path) if cni_path else None, cache_dir=cache_dir,
    ))


_CAP_HELP = ("Capability args of your own, a JSON object keyed by capability, e.g. "
             '\'{"bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}}\'.')
_PORT_HELP = "Publish a port through the chain's portmap: [HOSTIP:]HOST:CONT[/PROTO] (repeatable)."


@click.command()
@click.argument("container")
@click.argument("network")
@click.option("--ifname", default="eth0", show_default=True, help="The interface's name.")
@click.option("--ip", default="", help="The address to ask the chain's IPAM for.")
@click.option("-p", "--publish", multiple=True, help=_PORT_HELP)
@click.option("--arg", "cni_args", multiple=True, metavar="K=V[;K=V...]",
              help="CNI_ARGS of your own, beside the container's name, namespace and id "
              "(repeatable).")
@click.option("--cap", "caps", default="", metavar="JSON", help=_CAP_HELP)
@_mode_options
@reports_errors
def attach(container: str, network: str, ifname: str, ip: str, publish: tuple[str, ...],
           cni_args: tuple[str, ...], caps: str, state_dir: str | None, conf_dir: str | None,
           cni_path: str | None, cache_dir: str | None) -> None:
    """ADD the conflist NETWORK into the namespace of the running CONTAINER (started with
    --network none); print the CNI result. A failure part-way is undone and names the plugin."""
    from .none_io import Request, parse_args, parse_port
    from .podargs import parse_caps

    req = Request(network, ifname, ip, tuple(parse_port(p) for p in publish),
                  parse_args(cni_args), caps=parse_caps(caps, "--cap"))
    rec = _mode(state_dir, conf_dir, cni_path, cache_dir).attach(container, req)
    click.echo(json.dumps(rec.attachment.result.to_json(), indent=4))


@click.command()
@click.argument("container")
@click.argument("network")
@click.option("--ifname", default=None, help="Only the attachment on this interface.")
@_mode_options
@reports_errors
def detach(container: str, network: str, ifname: str | None, state_dir: str | None,
           conf_dir: str | None, cni_path: str | None, cache_dir: str | None) -> None:
    """DEL the conflist NETWORK from CONTAINER with the config and arguments ADD ran with;
    succeeds when the container is already gone."""
    for rec in _mode(state_dir, conf_dir, cni_path, cache_dir).detach(container, network, ifname):
        click.echo(f"detached {rec.name or rec.container_id[:12]} from {rec.network} "
                   f"({rec.ifname})")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--cni-net", "cni_nets", required=True, metavar="NET[,NET...]",
              help="The conflists to attach, in order: eth0, eth1, ...")
@click.option("--ip", "ips", multiple=True,
              help="An address for the network in the same place of --cni-net (repeatable).")
@click.option("-p", "--publish", multiple=True, help=_PORT_HELP + " On the first network.")
@click.option("--arg", "cni_args", multiple=True, metavar="K=V[;K=V...]",
              help="CNI_ARGS of your own for every network, beside the container's name, "
              "namespace and id (repeatable).")
@click.option("--cap", "caps", default="", metavar="JSON", help=_CAP_HELP + " For every network.")
@click.option("--holder", default="", metavar="'IMAGE [COMMAND...]'",
              help="Attach to a holder container started from IMAGE (a pause image, or e.g. "
              "'busybox sleep 2147483647') and start the app in its namespace: the app starts "
              "with its address and keeps it across restarts.")
@_mode_options
@click.argument("docker_args", nargs=-1, type=click.UNPROCESSED, required=True)
@reports_errors
def run(cni_nets: str, ips: tuple[str, ...], publish: tuple[str, ...],
        cni_args: tuple[str, ...], caps: str, holder: str, state_dir: str | None,
        conf_dir: str | None, cni_path: str | None, cache_dir: str | None,
        docker_args: tuple[str, ...]) -> None:
    """Create a container with --network none (docker create with DOCKER_ARGS, after --),
    start it and attach the networks; remove it again, saying why, if attaching fails.

    The address is in place when this returns; without --holder the container's main process
    starts before it (see the README). Prints the container's id.
    """
    import shlex

    from .none_io import parse_args, parse_port
    from .podargs import parse_caps
    from .runner import run as run_in

    nets = [n for n in cni_nets.split(",") if n]
    cid, _ = run_in(_mode(state_dir, conf_dir, cni_path, cache_dir), nets, list(docker_args),
                    ips=ips, port_specs=[parse_port(p) for p in publish],
                    args=parse_args(cni_args), caps=parse_caps(caps, "--cap"),
                    holder=shlex.split(holder))
    click.echo(cid)


@click.command()
@click.option("--workers", default=8, show_default=True,
              help="Containers wired at once (one container's events are never handled at once).")
@log_level_option
@_mode_options
@reports_errors
def watch(workers: int, log_level: str, state_dir: str | None, conf_dir: str | None,
          cni_path: str | None, cache_dir: str | None) -> None:
    """Attach containers labelled pycni.networks=NET[,NET...] (and pycni.ports, pycni.ip,
    pycni.args) as they start, detach them as they stop or go; resync from Docker's container
    list at start and whenever Docker's event stream was lost. SIGTERM or SIGINT stops it."""
    import signal

    from .watch import Watch

    setup_logging(log_level)
    controller = Watch(_mode(state_dir, conf_dir, cni_path, cache_dir), workers=workers)

    def stop(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("pycni watch: signal %d; stopping", signum)
        controller.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    controller.run()


def _containers(settings: Settings) -> Any:
    from .containers import Containers

    return Containers.from_settings(settings)
