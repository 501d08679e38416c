"""What pycni knows about particular plugins (:mod:`shim.plugins`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shim import plugins
from shim.cni.config import NetworkConfigList, conflist_from_dict

pytestmark = pytest.mark.unit


def chain(*extra: dict[str, Any]) -> Any:
    return conflist_from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.200.1.0/24"}}, *extra]})


@pytest.mark.parametrize(("extra", "opens"), [
    ((), False),
    (({"type": "portmap"},), True),  # snat is on unless said otherwise
    (({"type": "portmap", "snat": True},), True),
    (({"type": "portmap", "snat": False},), False),
    (({"type": "firewall"}, {"type": "bandwidth"}), False),
    (({"type": "someone-elses"},), True),  # unknown: it may, so it is guarded
])
def test_which_chains_may_open_the_hosts_loopback(extra: tuple[dict[str, Any], ...],
                                                  opens: bool) -> None:
    assert plugins.opens_loopback(chain(*extra)) is opens


def test_host_locals_directory_goes_with_a_network_pycni_named(tmp_path: Path) -> None:
    """Only its lock and last-reserved files left: removed; a reservation, or a conflist's
    name (others may use it), keeps it."""
    def config(name: str) -> NetworkConfigList:
        return conflist_from_dict({"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local", "dataDir": str(tmp_path),
                                        "ranges": [[{"subnet": "10.200.7.0/24"}]]}}]})

    own = tmp_path / "pycni-0123456789ab"
    own.mkdir()
    (own / "lock").write_text("")
    (own / "last_reserved_ip.0").write_text("10.200.7.2")
    assert plugins.host_local_dirs(config(own.name)) == [str(own)]
    (own / "10.200.7.2").write_text("c1")
    assert plugins.forget_host_local(config(own.name), own.name) == []  # still reserved
    (own / "10.200.7.2").unlink()
    shared = tmp_path / "mynet"
    shared.mkdir()
    assert plugins.forget_host_local(config("mynet"), own.name) == [] and shared.exists()
    assert plugins.forget_host_local(config(own.name), own.name) == [str(own)]
    assert not own.exists()
    assert plugins.forget_host_local(config(own.name), own.name) == []  # gone already: fine
