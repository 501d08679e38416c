"""``pycni check`` for the ``--network none`` mode's attachments, on fakes (Docker, links, CNI)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shim.health.attached import check_attached
from shim.health.findings import FAIL, OK, Finding
from shim.netlink import LiveLink
from shim.none_io import Request
from shim.settings import Settings
from tests.unit.test_containers import CID, Rig

pytestmark = pytest.mark.unit


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    r.live()
    r.mode.attach(CID, Request("pcn"))
    return r


def settings(rig: Rig) -> Settings:
    return Settings(state_dir=str(rig.tmp / "state"), cache_dir=str(rig.cache))


def links(*addresses: str) -> list[LiveLink]:
    return [LiveLink("lo", "00:00:00:00:00:00"), LiveLink("eth0", "", addresses)]


def statuses(findings: list[Finding]) -> list[str]:
    return [f.status for f in findings]


def test_a_healthy_attachment_passes_and_checks_with_adds_config(rig: Rig) -> None:
    target = rig.docker.target(CID)
    found = check_attached(target, rig.mode.records(CID), settings(rig), cni=rig.mode.cni,
                           read_links=lambda ns: links("10.201.200.5/24"))
    assert statuses(found) == [OK, OK, OK], found
    assert "CNI CHECK passed (3 plugins checked)" in str(found[-1])
    [check] = [c for c in rig.fake.calls if c.command == "CHECK"][:1]
    assert check.env["CNI_NETNS"] == rig.mode.records(CID)[0].attachment.netns  # the pin
    assert check.env["CNI_CONTAINERID"] == CID and check.env["CNI_IFNAME"] == "eth0"


def test_a_missing_address_a_restart_and_a_gone_container_fail_with_what_to_do(
        rig: Rig) -> None:
    recs = rig.mode.records(CID)
    target = rig.docker.target(CID)
    found = check_attached(target, recs, settings(rig), cni=rig.mode.cni,
                           read_links=lambda ns: links())
    assert FAIL in statuses(found)
    assert any("lacks 10.201.200.5/24" in str(f) for f in found)

    restarted = dataclasses.replace(target, pid=5151)
    [f] = check_attached(restarted, recs, settings(rig), cni=rig.mode.cni)
    assert f.failed and "restarted" in f.message and "pycni detach app pcn" in f.hint

    [f] = check_attached(None, recs, settings(rig), cni=rig.mode.cni)
    assert f.failed and "gone" in f.message and "pycni gc" in f.hint


def test_a_missing_cache_file_fails(rig: Rig) -> None:
    for path in rig.cache.rglob("*"):
        if path.is_file():
            path.unlink()
    found = check_attached(rig.docker.target(CID), rig.mode.records(CID), settings(rig),
                           cni=rig.mode.cni, read_links=lambda ns: links("10.201.200.5/24"))
    assert any(f.failed and "cache file" in f.message for f in found)
