"""A conflist at CNI 0.3.1 (bridge + host-local): the pre-0.4.0 rules, with real plugins.

At 0.3.1 a result's ``ips`` entries carry ``"version"``, DEL gets no ``prevResult`` (that arrived
with 0.4.0) and there is no CHECK. The cache record is written all the same, as libcni does.
(firewall is not in this chain: it speaks only 0.4.0 and 1.0.0.)
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from shim.cni import CNI, RuntimeConf
from shim.cni.config import conflist_from_dict
from shim.errors import CNIError

from .helpers import RecordingExec, assert_private_dirs_clean, cache_files, links_in, reservations

pytestmark = pytest.mark.integration

SUBNET = ipaddress.ip_network("10.201.3.0/24")


def test_a_0_3_1_chain_adds_and_deletes_by_the_old_rules(
    cni: CNI,
    recorder: RecordingExec,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    name = f"pycni-it-{secrets.token_hex(3)}"
    net = conflist_from_dict(
        {
            "cniVersion": "0.3.1",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": links("br"),
                    "isGateway": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cni_root / "networks"),
                        "ranges": [[{"subnet": str(SUBNET)}]],
                    },
                }
            ],
        }
    )
    rt = RuntimeConf(container_id=f"pycni-it-{secrets.token_hex(4)}", netns=ns())

    result = cni.add(net, rt)

    (printed,) = recorder.answered("bridge", "ADD")  # the plugin's own words
    assert printed["cniVersion"] == "0.3.1"
    assert [ip["version"] for ip in printed["ips"]] == ["4"]
    assert result.cni_version == "0.3.1"
    out = result.to_json()
    assert out["cniVersion"] == "0.3.1"
    assert [ip["version"] for ip in out["ips"]] == ["4"]
    assert ipaddress.ip_interface(out["ips"][0]["address"]).network == SUBNET
    assert "eth0" in links_in(rt.netns)
    # the cache record: libcni's name, kind, mode, and the 0.3.1 result as the plugin answered it
    (record_name,) = cache_files(cni_root)
    assert record_name == f"{name}-{rt.container_id}-eth0"
    record_path = cni_root / "results" / record_name
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
    record = json.loads(record_path.read_text())
    assert record["kind"] == "cniCacheV1"
    assert record["result"]["cniVersion"] == "0.3.1"
    assert record["result"]["ips"][0]["version"] == "4"
    assert len(reservations(cni_root)) == 1

    with pytest.raises(CNIError) as excinfo:
        cni.check(net, rt)
    assert excinfo.value.code == CNIError.INCOMPATIBLE_VERSION

    cni.delete(net, rt)

    (sent,) = recorder.sent("bridge", "DEL")
    assert "prevResult" not in sent
    assert sent["cniVersion"] == "0.3.1"
    assert "eth0" not in links_in(rt.netns)
    assert_private_dirs_clean(cni_root)
    cni.delete(net, rt)
    assert_private_dirs_clean(cni_root)
