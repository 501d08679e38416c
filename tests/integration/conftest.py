"""Fixtures of the integration tier: real plugins, private CNI dirs, links the test owns.

Every test gets

* ``cni_root``: its own libcni cache dir (``results/``) that is also the parent of host-local's
  ``dataDir`` (``networks/``), so nothing lands in ``/var/lib/cni`` and the test can prove both end
  empty;
* ``cni``: a :class:`shim.cni.CNI` over the real plugins, recording what each was sent;
* ``links``: unique link names (≤ 15 characters) that are deleted at teardown — the bridge plugin
  never deletes its bridge (the driver does that at DeleteNetwork), and parents for macvlan are
  made by the test.

Fixtures that create host state depend on ``leak_check``, so they are torn down before its final
snapshot is compared with the first one.
"""

from __future__ import annotations

import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.cni import CNI

from .helpers import FakePlugin, RecordingExec, sh

FAKE_PLUGIN_SOURCE = Path(__file__).with_name("fake_cni110.py")
FAKE_PLUGIN = "pycni-fake110"


@pytest.fixture(autouse=True)
def _audited(leak_check: list[str]) -> list[str]:
    """Every integration test is leak-checked, whether or not it means to touch the host."""
    return leak_check


@pytest.fixture
def cni_root(tmp_path: Path) -> Path:
    root = tmp_path / "cni"
    root.mkdir()
    return root


@pytest.fixture
def recorder() -> RecordingExec:
    return RecordingExec()


@pytest.fixture
def cni(cni_root: Path, cni_path: str, recorder: RecordingExec) -> CNI:
    return CNI(cni_path.split(":"), exec=recorder, cache_dir=str(cni_root), timeout=30)


@pytest.fixture
def ns(leak_check: list[str], netns: Callable[[], str]) -> Callable[[], str]:
    """``netns``, ordered after ``leak_check`` so namespaces are gone before it compares."""
    return netns


@pytest.fixture
def links(leak_check: list[str]) -> Iterator[Callable[[str], str]]:
    """A factory of unique link names ``pycni<tag><hex>``; each link is deleted at teardown."""
    made: list[str] = []

    def name(tag: str) -> str:
        link = f"pycni{tag}{secrets.token_hex(3)}"
        assert len(link) <= 15, f"link name {link!r} too long"
        made.append(link)
        return link

    yield name
    for link in reversed(made):
        sh("ip", "link", "delete", link, check=False)


@pytest.fixture
def parent_link(links: Callable[[str], str]) -> str:
    """An isolated link to hang macvlan interfaces on.

    A dummy link when the kernel has the dummy driver; otherwise (some VM kernels ship without it)
    one end of a veth pair whose peer stays, unconnected, on the host. Either way frames never
    reach a physical network: macvlan in bridge mode switches between its children, and whatever
    leaves the parent goes nowhere.
    """
    parent = links("-dm")
    if sh("ip", "link", "add", parent, "type", "dummy", check=False).returncode != 0:
        peer = links("-dp")
        sh("ip", "link", "add", parent, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "up")
    sh("ip", "link", "set", parent, "up")
    return parent


@pytest.fixture
def fake_plugin(tmp_path: Path) -> FakePlugin:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    target = bin_dir / FAKE_PLUGIN
    shutil.copyfile(FAKE_PLUGIN_SOURCE, target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return FakePlugin(FAKE_PLUGIN, bin_dir)


@pytest.fixture
def fake_cni(
    fake_plugin: FakePlugin, cni_root: Path, cni_path: str, recorder: RecordingExec
) -> CNI:
    """A CNI whose CNI_PATH has the fake plugin's dir first, then the reference plugins."""
    path = [str(fake_plugin.bin_dir), *cni_path.split(":")]
    return CNI(path, exec=recorder, cache_dir=str(cni_root), timeout=30)
