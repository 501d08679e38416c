#!/usr/bin/env python3
"""A CNI 1.1.0 plugin for the integration tests: speaks every verb, touches nothing.

The reference plugins (1.1.1) stop at spec 1.0.0, so STATUS, GC and ``cniVersions`` negotiation can
only be exercised against a plugin that speaks 1.1.0. The tests copy this file into their tmp_path
and put that directory first in CNI_PATH. It is standalone on purpose (stdlib only, no pycni) and
everything it does is driven by files next to its own copy:

* ``<name>.log``: one JSON line per invocation, ``{"command", "containerID", "ifname", "netns",
  "args", "stdin"}``, so a test can see exactly what the runtime sent, VERSION included;
* ``<name>.status-fail``: while it exists, STATUS fails with code 50 ("plugin not available") and
  the file's content as ``msg``.

ADD passes ``prevResult`` through (converted to the config's version) or, first in a chain, returns
a fake interface named CNI_IFNAME with the config's ``fakeAddress``; it never creates anything.
A config key ``failAdd`` (a message) makes ADD fail with code 999 after logging.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
HERE = os.path.dirname(os.path.abspath(sys.argv[0]))
NAME = os.path.basename(sys.argv[0])
LOG = os.path.join(HERE, NAME + ".log")
STATUS_FAIL = os.path.join(HERE, NAME + ".status-fail")


def fail(code: int, msg: str, details: str = "") -> NoReturn:
    print(json.dumps({"cniVersion": "1.1.0", "code": code, "msg": msg, "details": details}))
    sys.exit(1)


def at_least(version: str, minimum: str) -> bool:
    return tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def convert(result: dict[str, Any], version: str) -> dict[str, Any]:
    """A result in another spec version: only the ``ips[].version`` key differs that matters."""
    out = dict(result, cniVersion=version)
    ips = []
    for entry in result.get("ips") or []:
        entry = dict(entry)
        if at_least(version, "1.0.0"):
            entry.pop("version", None)
        else:
            entry["version"] = "6" if ":" in entry["address"] else "4"
        ips.append(entry)
    if ips:
        out["ips"] = ips
    return out


def add(conf: dict[str, Any], version: str) -> dict[str, Any]:
    if conf.get("failAdd"):
        fail(999, str(conf["failAdd"]))
    if conf.get("prevResult"):
        return convert(conf["prevResult"], version)
    iface: dict[str, Any] = {
        "name": os.environ.get("CNI_IFNAME", ""),
        "sandbox": os.environ.get("CNI_NETNS", ""),
    }
    route: dict[str, Any] = {"dst": "10.201.98.0/24"}
    if at_least(version, "1.1.0"):
        # fields new in 1.1.0, to prove the runtime keeps them
        iface["mtu"] = 1400
        route["mtu"] = 1300
    result = {
        "cniVersion": version,
        "interfaces": [iface],
        "ips": [{"address": conf.get("fakeAddress", "10.201.99.2/24"), "interface": 0}],
        "routes": [route],
    }
    return convert(result, version)


def main() -> None:
    command = os.environ.get("CNI_COMMAND", "")
    raw = sys.stdin.read()
    try:
        conf = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        fail(6, f"stdin is not JSON: {exc}")
    with open(LOG, "a", encoding="utf-8") as log:
        entry = {
            "command": command,
            "containerID": os.environ.get("CNI_CONTAINERID", ""),
            "ifname": os.environ.get("CNI_IFNAME", ""),
            "netns": os.environ.get("CNI_NETNS", ""),
            "args": os.environ.get("CNI_ARGS", ""),
            "stdin": conf,
        }
        log.write(json.dumps(entry) + "\n")
    if command == "VERSION":
        print(json.dumps({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}))
        return
    version = conf.get("cniVersion", "")
    if version not in SUPPORTED:
        fail(1, f"incompatible CNI version {version!r}")
    if command == "ADD":
        print(json.dumps(add(conf, version)))
    elif command == "CHECK":
        if not conf.get("prevResult"):
            fail(7, "CHECK needs prevResult")
    elif command in ("DEL", "GC"):
        pass
    elif command == "STATUS":
        if os.path.exists(STATUS_FAIL):
            with open(STATUS_FAIL, encoding="utf-8") as f:
                fail(50, f.read().strip() or "not ready")
    else:
        fail(4, f"unknown CNI_COMMAND {command!r}")


if __name__ == "__main__":
    main()
