"""What pycni knows about particular plugins (:mod:`shim.plugins`)."""

from __future__ import annotations

from typing import Any

import pytest

from shim import plugins
from shim.cni.config import conflist_from_dict

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
