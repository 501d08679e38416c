"""pycni's errors, and what each one means to Docker and to the shell.

Every error pycni raises on purpose derives from :class:`PycniError`. Each class carries the HTTP
status the remote-driver API answers with (``{"Err": str(exc)}``) and the exit code the CLI uses, so
the API's one error handler and click's one exit path never need a table of their own::

    PycniError                      500  exit 1   anything we raise on purpose
    ├── InvalidRequest              400  exit 2   Docker (or a CLI user) sent something we can't use
    │   ├── ConfigError             400  exit 2   a CNI network config is unusable: names file + field
    │   └── Unsupported             400  exit 2   a feature pycni deliberately doesn't do (swarm scope)
    ├── NotFound                    404  exit 3   an unknown network, endpoint or CNI network name
    ├── CNIError                    500  exit 4   a CNI plugin failed: names plugin, verb, code, message
    │   ├── PluginNotFound          500  exit 4   the plugin binary is not in CNI_PATH
    │   └── PluginTimeout           500  exit 4   the plugin did not answer in time
    ├── NetlinkFailure              500  exit 5   a link or namespace operation failed
    ├── FirewallError               500  exit 5   iptables refused a per-network rule
    ├── StateError                  500  exit 6   pycni's own records on disk are unreadable
    └── OverlayError                500  exit 7   an overlay's lease or definition can't be had
        ├── StoreUnavailable        503  exit 7   the overlay's store (etcd) can't be reached
        └── SubnetTaken             500  exit 7   another host holds this host's overlay subnet

Only the boundary modules (``netlink.py``, ``cni/invoke.py``, ``firewall.py``, ``state.py``, and
for overlays ``overlay/store.py`` and ``overlay/vtep.py``) see
``OSError``, ``subprocess`` or pyroute2 exceptions; they translate them here with
``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any


class PycniError(Exception):
    """Base of every error pycni raises deliberately."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(PycniError):
    """The request can't be served as given: malformed JSON, a missing field, a bad option."""

    status = 400
    exit_code = 2


class ConfigError(InvalidRequest):
    """A CNI network configuration is unusable. The message names the file and the field."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        where = source or "network config"
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)
        self.source = source
        self.field = field


class Unsupported(InvalidRequest):
    """Something pycni deliberately does not do (for example swarm-scoped networks)."""


class NotFound(PycniError):
    """An unknown network, endpoint or CNI network name."""

    status = 404
    exit_code = 3


class CNIError(PycniError):
    """A CNI plugin failed.

    Carries the spec's error fields (``code``, ``msg``, ``details``) plus which plugin failed doing
    what, so ``docker run`` can say e.g.::

        CNI plugin "bridge" failed (ADD): [code 11] failed to allocate: no IP addresses available
    """

    exit_code = 4

    # Well-known codes from the CNI spec ("Error" section).
    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENV = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11

    def __init__(
        self,
        msg: str,
        *,
        plugin: str = "",
        verb: str = "",
        code: int = 0,
        details: str = "",
    ) -> None:
        self.plugin = plugin
        self.verb = verb
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(self._render())

    def _render(self) -> str:
        head = f'CNI plugin "{self.plugin}"' if self.plugin else "CNI"
        if self.verb:
            head += f" failed ({self.verb})"
        else:
            head += " failed"
        body = self.msg
        if self.code:
            body = f"[code {self.code}] {body}"
        if self.details:
            body = f"{body}: {self.details}"
        return f"{head}: {body}"

    def label(self, plugin: str, verb: str) -> CNIError:
        """Fill in which plugin and verb failed, where the raiser didn't know; returns self."""
        self.plugin = self.plugin or plugin
        self.verb = self.verb or verb
        self.message = self._render()
        self.args = (self.message,)
        return self

    def to_json(self) -> dict[str, Any]:
        """The spec's error object, as a plugin would print it."""
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class PluginNotFound(CNIError):
    """The plugin binary is not in any CNI_PATH directory."""


class PluginTimeout(CNIError):
    """The plugin ran longer than its timeout and was killed."""


class NetlinkFailure(PycniError):
    """A netlink operation (link, address, namespace) failed."""

    exit_code = 5


class FirewallError(PycniError):
    """iptables refused a rule pycni needs for a network (masquerade, forwarding)."""

    exit_code = 5


class StateError(PycniError):
    """pycni's state on disk can't be read or written."""

    exit_code = 6


class OverlayError(PycniError):
    """An overlay network can't be joined or kept: no free subnet, a contradicting definition
    held by the store, a VTEP the kernel refused."""

    exit_code = 7


class StoreUnavailable(OverlayError):
    """The overlay's store (etcd) did not answer, or answered with an error."""

    status = 503


class SubnetTaken(OverlayError):
    """This host's per-host subnet of an overlay is held by another host: this host's lease
    expired while its pycni was away, and the other host claimed the subnet meanwhile."""
