"""A :class:`~shim.driver.Driver` on fakes, with Docker's side of the conversation as helpers.

The driver is real; its plugins (:class:`~tests.fakes.FakeExec` with a
:class:`~tests.fakelinks.FakeMainPlugin` as ``bridge``), its links
(:class:`~tests.fakelinks.FakeLinks`) and its iptables (:class:`~tests.fakelinks.FakeRules`)
are fakes, and its state, CNI cache and conf dir live in a temporary directory::

    w = World(tmp_path)
    w.create_network()                          # zero config, Docker's IPAM, 10.200.9.0/24
    w.create_endpoint(EP, address="10.200.9.7/24")
    w.join(EP)
    w.delete_endpoint(EP)
    assert w.leftovers() == {}

Shared by the driver tests, the API tests and the fuzz tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flask import Flask

from shim.app import create_app
from shim.cni import CNI
from shim.driver import Driver
from shim.protocol import (
    CreateEndpointRequest,
    CreateNetworkRequest,
    EndpointRequest,
    JoinRequest,
)
from shim.settings import Settings
from shim.store import Store
from tests.fakelinks import FakeLinks, FakeMainPlugin, FakeRules
from tests.fakeproxy import FakeProxies
from tests.fakes import FakeExec

NET = "cd" * 32
EP = "ef" * 32
POOL = "10.200.9.0/24"
GATEWAY = "10.200.9.1"
SANDBOX = "/var/run/docker/netns/0123456789ab"
NULL_IPAM = [{"AddressSpace": "null", "Pool": "0.0.0.0/0"}]


def docker_pool(pool: str = POOL, gateway: str | None = GATEWAY) -> list[dict[str, Any]]:
    """``IPv4Data`` as Docker's default IPAM sends it."""
    prefix = pool.split("/")[1]
    entry: dict[str, Any] = {"AddressSpace": "LocalDefault", "Pool": pool}
    if gateway:
        entry["Gateway"] = f"{gateway}/{prefix}"
    return [entry]


class World:
    """One driver, its fakes and its directories; one per test (or per hypothesis example)."""

    def __init__(self, root: str | Path, *, max_body: int = 1 << 20) -> None:
        root = Path(root)
        self.root = root
        self.conf_dir = root / "net.d"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            socket_path=str(root / "pycni.sock"),
            cni_path=("/fake/bin",),
            conf_dir=str(self.conf_dir),
            cache_dir=str(root / "cache"),
            state_dir=str(root / "state"),
            max_body=max_body,
        )
        self.links = FakeLinks()
        self.exec = FakeExec()
        self.bridge = FakeMainPlugin(self.links).install(self.exec)
        self.rules = FakeRules()
        self.proxies = FakeProxies()
        self.announced: list[tuple[str, str, list[str]]] = []  # (netns, ifname, addresses)
        self.driver = self.new_driver()

    def new_driver(self) -> Driver:
        """A driver on the same state dir, cache, links and plugins (as after a restart)."""
        cni = CNI(list(self.settings.cni_path), exec=self.exec, cache_dir=self.settings.cache_dir)
        driver = Driver(
            self.settings,
            cni=cni,
            store=Store(self.settings.state_dir),
            links=self.links,
            docker_view=lambda: None,  # unit tests ask no Docker: gc works on local state
            rules=self.rules,
            proxies=self.proxies,
            announce=lambda ns, ifname, addrs: self.announced.append((ns, ifname, list(addrs))),
        )
        driver.restore()  # what pycni serve does at start
        return driver

    def restart(self) -> Driver:
        self.driver = self.new_driver()
        return self.driver

    def app(self) -> Flask:
        return create_app(self.settings, driver=self.driver)

    # --- CNI configs -----------------------------------------------------------------------------

    def conflist(self, name: str, *plugins: dict[str, Any], version: str = "1.0.0") -> str:
        """Write ``NAME.conflist`` into the conf dir; returns the name."""
        body = {"cniVersion": version, "name": name, "plugins": list(plugins)}
        (self.conf_dir / f"10-{name}.conflist").write_text(json.dumps(body))
        return name

    # --- Docker's calls --------------------------------------------------------------------------

    def network_request(
        self,
        network_id: str = NET,
        *,
        ipv4: list[dict[str, Any]] | None = None,
        ipv6: list[dict[str, Any]] | None = None,
        internal: bool = False,
        **options: str,
    ) -> dict[str, Any]:
        """CreateNetwork's body; ``options`` are ``-o`` options (``cni_network="x"`` is
        ``-o cni.network=x``)."""
        generic = {k.replace("_", ".", 1): v for k, v in options.items()}
        opts: dict[str, Any] = {"com.docker.network.generic": generic,
                                "com.docker.network.enable_ipv6": ipv6 is not None}
        if internal:
            opts["com.docker.network.internal"] = True
        return {"NetworkID": network_id, "Options": opts,
                "IPv4Data": docker_pool() if ipv4 is None else ipv4, "IPv6Data": ipv6 or []}

    def create_network(self, network_id: str = NET, **kwargs: Any) -> dict[str, Any]:
        req = self.network_request(network_id, **kwargs)
        self.driver.create_network(CreateNetworkRequest.from_json(req), req)
        return req

    def endpoint_request(self, endpoint_id: str = EP, network_id: str = NET, *,
                         address: str = "", address_ipv6: str = "", mac: str = "",
                         options: dict[str, Any] | None = None) -> dict[str, Any]:
        iface = {"Address": address, "AddressIPv6": address_ipv6, "MacAddress": mac}
        return {"NetworkID": network_id, "EndpointID": endpoint_id, "Options": options or {},
                "Interface": {k: v for k, v in iface.items() if v}}

    def create_endpoint(self, endpoint_id: str = EP, network_id: str = NET, *,
                        address: str = "10.200.9.7/24", **kwargs: Any) -> dict[str, Any]:
        body = self.endpoint_request(endpoint_id, network_id, address=address, **kwargs)
        answer: dict[str, Any] = self.driver.create_endpoint(
            CreateEndpointRequest.from_json(body), body).to_json()
        return answer

    def join(self, endpoint_id: str = EP, network_id: str = NET, *,
             sandbox: str = SANDBOX, move: bool = True) -> dict[str, Any]:
        """Join, then (``move``) do what Docker does next: move the link into the sandbox."""
        answer: dict[str, Any] = self.driver.join(JoinRequest.from_json(
            {"NetworkID": network_id, "EndpointID": endpoint_id, "SandboxKey": sandbox,
             "Options": {}})).to_json()
        if move:
            rec = self.driver.endpoints[endpoint_id]
            self.links.docker_join(answer["InterfaceName"]["SrcName"], sandbox,
                                   addresses=rec.addresses, mac=rec.mac)
        return answer

    def leave(self, endpoint_id: str = EP, network_id: str = NET, *,
              sandbox: str = SANDBOX, move: bool = True) -> None:
        """Leave, then (``move``) Docker releasing the sandbox: the link back on the host."""
        self.driver.leave(EndpointRequest.from_json(
            {"NetworkID": network_id, "EndpointID": endpoint_id}))
        rec = self.driver.endpoints.get(endpoint_id)
        if move and rec is not None:
            name = next(n for n, k in self.links.spaces[self.links._key(sandbox)].items()
                        if k.mac == rec.mac)
            self.links.docker_leave(sandbox, name, rec.host_ifname)

    def delete_endpoint(self, endpoint_id: str = EP, network_id: str = NET) -> None:
        self.driver.delete_endpoint(EndpointRequest.from_json(
            {"NetworkID": network_id, "EndpointID": endpoint_id}))

    def delete_network(self, network_id: str = NET) -> None:
        self.driver.delete_network(network_id)

    # --- what is left ----------------------------------------------------------------------------

    def cache_files(self) -> list[str]:
        results = os.path.join(self.settings.cache_dir, "results")
        return sorted(os.listdir(results)) if os.path.isdir(results) else []

    def records(self) -> tuple[list[str], list[str]]:
        """Ids of the network and endpoint records on disk."""
        store = Store(self.settings.state_dir)
        return sorted(n.id for n in store.networks()), sorted(e.id for e in store.endpoints())

    def leftovers(self) -> dict[str, Any]:
        """Everything endpoints leave behind; ``{}`` when none exists."""
        found: dict[str, Any] = {
            "staging netns": self.links.list_netns("pycni-"),
            "pcn links": self.links.host_links("pcn"),
            "veths": self.links.host_links("veth"),
            "endpoints in memory": sorted(self.driver.endpoints),
            "endpoint records": self.records()[1],
            "cache files": self.cache_files(),
        }
        return {k: v for k, v in found.items() if v}

    def consistent(self) -> None:
        """The bookkeeping is exact: one record, netns, cache file and link per endpoint."""
        assert self.records() == (sorted(self.driver.networks), sorted(self.driver.endpoints))
        # an endpoint whose chain waits for Join has nothing on the host yet
        eps = {e: rec for e, rec in self.driver.endpoints.items()
               if rec.phase != "created" and rec.place == "staging"}
        assert self.links.list_netns("pycni-") == sorted(f"pycni-{e[:12]}" for e in eps)
        assert len(self.cache_files()) == len(eps)
        for rec in eps.values():
            # the container's link: on the host as pcn…, or in the container's sandbox (unless
            # that sandbox died, taking the link with it)
            if rec.sandbox_key and rec.sandbox_key not in self.links.spaces:
                continue
            on_host = self.links.find(None, rec.host_ifname)
            in_sandbox = [k for k in self.links.spaces.get(rec.sandbox_key, {}).values()
                          if k.mac == rec.mac] if rec.sandbox_key else []
            assert on_host is not None or in_sandbox, rec.id
        strays = set(self.links.host_links("pcn")) - {e.host_ifname for e in eps.values()}
        assert not strays, strays
