"""The ``pycni`` command: serve, ls, inspect, gc, check, doctor; the ``--network none`` mode's
commands (:mod:`shim.cli_none`) and ``pycni cni`` (:mod:`shim.cli_cni`) are added to it. Errors
exit non-zero with ``pycni: error: …``; the exit code comes from the error's class
(:mod:`shim.errors`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click

from . import __version__, dockerview
from .cli_common import log_level_option, reports_errors, setup_logging
from .errors import InvalidRequest, NotFound, PycniError
from .overlay.manager import read_records as read_overlays
from .settings import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CNI_PATH,
    DEFAULT_CONF_DIR,
    DEFAULT_SOCKET,
    DEFAULT_STATE_DIR,
    Settings,
    split_path,
)
from .store import Store

#: Docker calls a driver once per container starting or stopping, all at once, with no limit of
#: its own; most calls wait on their network's lock or a plugin process, which costs a thread
#: and no CPU. 64 serves 50 parallel `docker run`/`docker rm` without queueing a call.
DEFAULT_THREADS = 64

@click.group()
@click.version_option(__version__, prog_name="pycni")
def main() -> None:
    """pycni: a Docker network driver that runs CNI plugins."""


# --- pycni serve / ls / inspect ----------------------------------------------------------------


@main.command()
@click.option("--socket", "socket_path", default=None, help=f"Unix socket (default {DEFAULT_SOCKET}).")
@click.option("--state-dir", default=None, help=f"pycni's records (default {DEFAULT_STATE_DIR}).")
@click.option("--conf-dir", default=None, help=f"CNI conf dir (default {DEFAULT_CONF_DIR}).")
@click.option("--cni-path", default=None, help=f"Plugin dirs (default {DEFAULT_CNI_PATH}).")
@click.option("--cache-dir", default=None, help=f"libcni cache (default {DEFAULT_CACHE_DIR}).")
@click.option(
    "--threads",
    default=DEFAULT_THREADS,
    show_default=True,
    help="Requests served at once (Docker sends as many at once as containers start and stop).",
)
@click.option("--etcd", default=None, metavar="URL",
              help="etcd for overlay networks across hosts, http[s]://HOST:PORT (env PYCNI_ETCD).")
@click.option("--etcd-ca", default=None, help="CA file etcd's certificate is checked with.")
@click.option("--etcd-cert", default=None, help="Client certificate file pycni shows etcd.")
@click.option("--etcd-key", default=None, help="Its key file.")
@click.option("--underlay-address", default=None,
              help="This host's address other hosts reach its VTEPs at (default: the default "
              "route's source address).")
@click.option("--without-etcd", is_flag=True,
              help="Serve although this host is on overlay networks and no --etcd is given "
              "(they then reach no other host).")
@click.option("--watch", "with_watch", is_flag=True,
              help="Also be the controller of the --network none mode (as 'pycni watch').")
@log_level_option
@reports_errors
def serve(
    socket_path: str | None,
    state_dir: str | None,
    conf_dir: str | None,
    cni_path: str | None,
    cache_dir: str | None,
    threads: int,
    etcd: str | None,
    etcd_ca: str | None,
    etcd_cert: str | None,
    etcd_key: str | None,
    underlay_address: str | None,
    without_etcd: bool,
    with_watch: bool,
    log_level: str,
) -> None:
    """Serve Docker's network driver API on a unix socket (Docker finds it there by itself).

    With --watch, also attach containers labelled pycni.networks=NET[,NET...] as "pycni watch"
    does, in the same process."""
    from .server import run  # waitress is only needed here

    setup_logging(log_level, by_level=True)
    settings = Settings.from_env(
        socket_path=socket_path,
        state_dir=state_dir,
        conf_dir=conf_dir,
        cni_path=split_path(cni_path) if cni_path else None,
        cache_dir=cache_dir,
        etcd=etcd,
        etcd_ca=etcd_ca,
        etcd_cert=etcd_cert,
        etcd_key=etcd_key,
        underlay_address=underlay_address,
    )
    run(settings, threads=threads, watch=with_watch, without_etcd=without_etcd)


def _settings(state_dir: str | None) -> Settings:
    return _known_driver(Settings.from_env(state_dir=state_dir))


def _known_driver(settings: Settings) -> Settings:
    """``settings`` with the driver name Docker knows pycni's networks by, unless
    ``PYCNI_DRIVER_NAME`` says it: a managed plugin is ``pycni:latest`` (or whatever it was
    installed as), and the commands run on the host find that out by themselves."""
    if "PYCNI_DRIVER_NAME" in os.environ:
        return settings
    try:
        ids = {n.id for n in Store(settings.state_dir).networks()}
    except PycniError:
        return settings  # unreadable records: the command itself says why, its own way
    found = dockerview.driver_of(ids)
    return dataclasses.replace(settings, driver_name=found) if found else settings


@main.command("ls")
@click.option("--state-dir", default=None, help=f"pycni's records (default {DEFAULT_STATE_DIR}).")
@reports_errors
def ls(state_dir: str | None) -> None:
    """List pycni networks and their endpoints with their addresses."""
    settings = _settings(state_dir)
    store = Store(settings.state_dir)
    endpoints = store.endpoints()
    networks = store.networks()
    attached = store.containers()
    failed = store.failures()
    if not networks and not attached and not failed:
        click.echo("no pycni networks")
        return
    if networks:
        _ls_networks(settings, networks, endpoints)
    if attached:
        if networks:
            click.echo("")
        click.echo("containers started with --network none, attached by pycni:")
        click.echo(f"{'CONTAINER':<20}{'NETWORK':<20}{'IFNAME':<8}ADDRESSES")
        for rec in attached:
            addrs = ",".join(str(ip.address) for ip in rec.attachment.ips()) or "-"
            name = rec.app_name or rec.name or rec.container_id[:12]
            held = f"  (in holder {rec.name or rec.container_id[:12]})" if rec.app_id else ""
            click.echo(f"{name:<20}{rec.network:<20}{rec.ifname:<8}{addrs}{held}")
    if failed:
        if networks or attached:
            click.echo("")
        click.echo("labelled containers pycni watch could not attach:")
        click.echo(f"{'CONTAINER':<20}{'NETWORK':<20}ERROR")
        for fail in failed:
            click.echo(f"{fail.name or fail.container_id[:12]:<20}{fail.network:<20}{fail.error}")


def _ls_networks(settings: Settings, networks: list[Any], endpoints: list[Any]) -> None:
    names = dockerview.names(settings.driver_name)
    overlays = read_overlays(settings.state_dir)
    click.echo(f"{'NETWORK':<14}{'NAME':<20}{'MODE':<13}{'IPAM':<8}{'CHAIN':<32}ENDPOINTS")
    for net in networks:
        chain = "+".join(net.config.plugin_types())
        mine = [e for e in endpoints if e.network_id == net.id]
        name = names.networks.get(net.id, "-")
        click.echo(
            f"{net.id[:12]:<14}{name:<20}{net.mode:<13}{net.ipam:<8}{chain:<32}{len(mine)}"
        )
        joined = overlays.get(net.id)
        if joined is not None:
            peers = ", ".join(f"{p.subnet} at {p.underlay}" for p in joined.peers) or "none"
            ttl = f", lease TTL {joined.ttl} s" if joined.ttl else ""
            click.echo(f"  overlay {joined.name}: this host {joined.subnet} at {joined.underlay} "
                       f"(VNI {joined.definition.vni}, {joined.vtep}{ttl}); peers {peers}")
            if joined.lost:
                click.echo(f"  LOST: {joined.lost}")
        for ep in mine:
            addrs = ",".join(ep.addresses) or "-"
            attached = names.endpoints.get(ep.id)
            container = attached.name if attached else "-"
            click.echo(f"  └ {ep.id[:12]}  {container:<20} {ep.phase:<9} {addrs}  {ep.mac}")


@main.command()
@click.argument("network")
@click.option("--state-dir", default=None, help=f"pycni's records (default {DEFAULT_STATE_DIR}).")
@reports_errors
def inspect(network: str, state_dir: str | None) -> None:
    """Show a pycni network (Docker name, id or id prefix): Docker's request, its CNI chain, its
    endpoints with their addresses and published ports."""
    from . import answers

    settings = _settings(state_dir)
    store = Store(settings.state_dir)
    names = dockerview.names(settings.driver_name)
    matches = [
        n for n in store.networks()
        if n.id.startswith(network) or names.networks.get(n.id) == network
    ]
    if not matches:
        raise NotFound(f"pycni has no network {network!r}")
    if len(matches) > 1:
        raise InvalidRequest(f"{network!r} matches {len(matches)} networks; give more of the id")
    net = matches[0]
    data = net.to_json()
    data["name"] = names.networks.get(net.id, "")
    joined = read_overlays(settings.state_dir).get(net.id)
    if joined is not None:
        data["overlay"] = {k: v for k, v in joined.to_json().items()
                           if k not in ("version", "network_id")}
    data["endpoints"] = []
    for ep in store.endpoints():
        if ep.network_id != net.id:
            continue
        item = {k: v for k, v in ep.to_json().items() if k != "request"}
        attached = names.endpoints.get(ep.id)
        item["container"] = {"id": attached.id, "name": attached.name} if attached else None
        # Docker can't show a remote driver's published ports (docker port); pycni can.
        item["ports"] = [
            str(m) for m in ep.attachment.port_mappings()
        ]
        item["way_out"] = answers.way_out(ep)  # "none": no default route, no docker_gwbridge
        data["endpoints"].append(item)
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@main.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--state-dir", default=None, help=f"pycni's records (default {DEFAULT_STATE_DIR}).")
@click.option("--socket", "socket_path", default=None, help=f"Unix socket (default {DEFAULT_SOCKET}).")
@reports_errors
def gc(dry_run: bool, state_dir: str | None, socket_path: str | None) -> None:
    """Remove what crashes or missed Docker calls left behind, and say what it was.

    Asks the running pycni serve to do it (it holds the locks); with no server running,
    does it in this process.
    """
    settings = _known_driver(
        Settings.from_env(state_dir=state_dir, socket_path=socket_path, served=True))
    actions = _gc_via_server(settings.socket_path, dry_run)
    if actions is None:
        from . import reconcile
        from .driver import Driver

        driver = Driver(settings)
        driver.load_records()  # no rules or proxies of a server put back from here
        actions = reconcile.gc(driver, dry_run=dry_run)
    # attachments of the --network none mode: no server involved, each container's lock here
    actions += _containers(settings).gc(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for line in actions:
        click.echo(line)
    click.echo(f"gc: {verb} {len(actions)} leftover(s)" if actions else "gc: nothing to remove")


def _containers(settings: Settings) -> Any:
    from .containers import Containers

    return Containers.from_settings(settings)


def _gc_via_server(path: str, dry_run: bool) -> list[str] | None:
    """The server's answer to /Pycni.GC, or None when no server answers on ``path``."""
    from .client import PluginClient

    try:
        status, body = PluginClient(path, timeout=300).post("Pycni.GC", {"DryRun": dry_run})
    except PycniError:
        return None
    if status != 200:
        raise PycniError(str(body.get("Err") or f"pycni serve answered {status}"))
    return [str(a) for a in body.get("Actions") or []]


# --- pycni check / doctor ---------------------------------------------------------------------


def _report(command: str, findings: list[Any]) -> None:
    """Print findings one a line, then a summary; exit 1 if any of them is a FAIL."""
    for finding in findings:
        click.echo(str(finding))
    failed = sum(1 for f in findings if f.failed)
    warned = sum(1 for f in findings if f.status == "warn")
    if failed or warned:
        click.echo(f"{command}: {failed} problem(s), {warned} warning(s)")
    else:
        click.echo(f"{command}: all ok")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("container")
@click.option("--state-dir", default=None, help=f"pycni's records (default {DEFAULT_STATE_DIR}).")
@click.option("--cni-path", default=None, help=f"Plugin dirs (default {DEFAULT_CNI_PATH}).")
@click.option("--cache-dir", default=None, help=f"libcni cache (default {DEFAULT_CACHE_DIR}).")
@reports_errors
def check(
    container: str, state_dir: str | None, cni_path: str | None, cache_dir: str | None
) -> None:
    """Check CONTAINER's (name or id) pycni endpoints: pycni's records, the staging netns,
    libcni's cache, its interfaces and addresses, and CNI CHECK against its live namespace.

    Exits 1 if anything is wrong, and says what to do about it.
    """
    from . import health

    settings = Settings.from_env(
        state_dir=state_dir,
        cni_path=split_path(cni_path) if cni_path else None,
        cache_dir=cache_dir,
        served=True,  # the plugins the server runs, unless told otherwise
    )
    _report("check", health.check(container, _known_driver(settings)))


@main.command()
@click.option("--state-dir", default=None, help=f"pycni's records (default {DEFAULT_STATE_DIR}).")
@click.option("--conf-dir", default=None, help=f"CNI conf dir (default {DEFAULT_CONF_DIR}).")
@click.option("--cni-path", default=None, help=f"Plugin dirs (default {DEFAULT_CNI_PATH}).")
@click.option("--socket", "socket_path", default=None, help=f"Unix socket (default {DEFAULT_SOCKET}).")
@reports_errors
def doctor(
    state_dir: str | None, conf_dir: str | None, cni_path: str | None, socket_path: str | None
) -> None:
    """Check the host for what pycni needs: plugin binaries, config files, dockerd, the plugin
    socket, forwarding for CNI bridges, and leftovers pycni gc would remove.

    Each line is ok, warn or FAIL with what to do; exits 1 if any is a FAIL.
    """
    from . import health

    settings = Settings.from_env(
        state_dir=state_dir,
        conf_dir=conf_dir,
        cni_path=split_path(cni_path) if cni_path else None,
        socket_path=socket_path,
        served=True,
    )
    _report("doctor", health.doctor(_known_driver(settings)))


def _register() -> None:
    """The commands of the --network none mode and ``pycni cni``, each in a module of its own."""
    from .cli_cni import cni_group
    from .cli_none import attach, detach, run, watch

    for command in (attach, detach, run, watch, cni_group):
        main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
