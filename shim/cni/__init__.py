"""A small libcni: load network configs, run plugin chains, keep libcni's result cache.

    from shim.cni import CNI, RuntimeConf, find

    cni = CNI(["/usr/lib/cni"])
    net = find("/etc/cni/net.d", "mynet")
    result = cni.add(net, RuntimeConf(container_id="abc", netns="/run/netns/x"))
    cni.delete(net, RuntimeConf(container_id="abc", netns="/run/netns/x"))
"""

from .api import CNI
from .config import NetworkConfigList, PluginConf, find, load_all, load_file, parse
from .runtime import AddFailed, DelFailed, RuntimeConf
from .types import Result, VersionInfo

__all__ = [
    "CNI",
    "AddFailed",
    "DelFailed",
    "NetworkConfigList",
    "PluginConf",
    "Result",
    "RuntimeConf",
    "VersionInfo",
    "find",
    "load_all",
    "load_file",
    "parse",
]
