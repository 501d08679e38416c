"""``pycni doctor`` on overlay networks: etcd unset or down, a lease gone or taken, all well."""

from __future__ import annotations

from pathlib import Path

import pytest

from shim.health.findings import FAIL, OK
from shim.health.overlays import check_overlays
from shim.overlay.leases import lease_key
from shim.overlay.manager import read_records
from shim.settings import Settings
from tests.fakeetcd import FakeEtcd
from tests.unit.test_overlay import asked, host

pytestmark = pytest.mark.unit

ME = "10.203.254.1"


def test_overlays_checked_against_etcd(tmp_path: Path) -> None:
    kv = FakeEtcd()
    me = host(kv, tmp_path, ME)
    joined = me.join("neta", asked())
    records = read_records(str(tmp_path / ME))
    on = Settings(etcd="http://fake:2379")

    assert check_overlays({}, on, lambda s: kv) == []
    [f] = check_overlays(records, Settings(), lambda s: kv)
    assert f.status == FAIL and "no etcd is set" in f.message and "PYCNI_ETCD" in f.hint

    [f] = check_overlays(records, on, lambda s: kv)
    assert f.status == OK and f"{ME}) holds {joined.subnet}" in f.message

    kv.down = True
    [f] = check_overlays(records, on, lambda s: kv)
    assert f.status == FAIL and "did not answer" in f.message and "routes already" in f.message
    kv.down = False

    key = lease_key("ov", joined.subnet)
    value, lease = kv.data.pop(key)
    [f] = check_overlays(records, on, lambda s: kv)
    assert f.status == FAIL and "is gone" in f.message

    kv.data[key] = (value.replace(ME, "10.203.254.9"), lease)
    [f] = check_overlays(records, on, lambda s: kv)
    assert f.status == FAIL and "held in etcd by 10.203.254.9" in f.message
