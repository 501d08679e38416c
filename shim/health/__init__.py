"""Is pycni healthy? ``pycni check CONTAINER`` and ``pycni doctor``, every finding as data.

Every check returns :class:`Finding` values (status, what was looked at, what was found, what to
do); the CLI only prints them::

    findings.py   Finding and its statuses: OK, WARN, SKIP, FAIL
    container.py  pycni check CONTAINER: pycni's record of each endpoint, what DeleteEndpoint
                  will need, the link in the container, CNI CHECK against its live sandbox
    host.py       pycni doctor: plugin binaries, config files, dockerd, the plugin socket,
                  forwarding for CNI bridges, leftovers
    probes.py     what doctor asks of the host (iptables, /proc), as one replaceable seam

Nothing here opens a boundary of its own: Docker is asked through :mod:`shim.dockerview`, the
plugin socket through :mod:`shim.client`, namespaces through :mod:`shim.netlink`, plugins through
a :class:`~shim.cni.CNI` — each a seam a test replaces, so every decision is testable without root.
"""

from __future__ import annotations

from .container import check
from .findings import FAIL, OK, SKIP, WARN, Finding, any_failed
from .host import doctor

__all__ = ["FAIL", "OK", "SKIP", "WARN", "Finding", "any_failed", "check", "doctor"]
