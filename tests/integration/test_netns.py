"""Named namespaces as pycni sees them: a namespace is an nsfs mount, not any file in /run/netns.

A managed plugin makes its staging namespaces in its own mount namespace and they reach the host
through the shared /run/netns mount; when Docker stops the plugin, the mounts go but their empty
mount-point files can stay. Such a file is no namespace: pycni must neither use it nor keep it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from shim import netlink

pytestmark = pytest.mark.integration


@pytest.fixture
def leftover() -> Iterator[str]:
    """The empty file a stopped plugin's staging namespace leaves (removed if a test fails)."""
    name = f"pycni-{secrets.token_hex(6)}"
    os.makedirs(netlink.NETNS_DIR, exist_ok=True)
    open(netlink.netns_path(name), "x").close()
    yield name
    netlink.remove_netns(name)


def test_an_empty_file_is_no_namespace(leftover: str) -> None:
    assert os.path.exists(netlink.netns_path(leftover))
    assert not netlink.netns_exists(leftover)
    assert netlink.delete_link("eth0", ns=leftover) is False  # DEL: already gone
    assert netlink.addresses(leftover, "eth0") == ("", [])


def test_create_replaces_an_empty_file_with_a_namespace(leftover: str) -> None:
    path = netlink.create_netns(leftover)
    assert netlink.netns_exists(leftover) and netlink.is_netns(path)
    assert "lo" in netlink.link_names(leftover)
    netlink.remove_netns(leftover)
    assert not os.path.lexists(path)


def test_remove_takes_an_empty_file_away(leftover: str) -> None:
    netlink.remove_netns(leftover)
    assert not os.path.lexists(netlink.netns_path(leftover))
    assert leftover not in netlink.list_netns("pycni-")
