"""A client for pycni's plugin socket, speaking to ``pycni serve`` as Docker does.

Docker calls a remote driver with ``POST /<Method>`` (``/Plugin.Activate``,
``/NetworkDriver.CreateEndpoint``, …), a JSON body and the media type :data:`MEDIA_TYPE`, over a
unix socket. ``pycni gc`` (which asks the running server to collect), ``pycni doctor`` and the
tests speak to the server the same way, through :class:`PluginClient`.

This is a boundary: the socket's ``OSError``, ``http.client``'s errors and an answer that is not
JSON end here, as :class:`~shim.errors.PycniError` with a message saying what happened (``nothing
is listening on /run/docker/plugins/pycni.sock``). An answer is an answer whatever its HTTP
status: callers read the status, and Docker's ``{"Err": …}``, themselves.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from typing import Any

from .errors import PycniError

#: what Docker sends as Content-Type to a plugin (and what pycni answers with)
MEDIA_TYPE = "application/vnd.docker.plugins.v1.2+json"


class PluginClient:
    """The plugin socket at ``path``; each call is one connection, as Docker's are."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def post(
        self, method: str, body: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` as JSON to ``/<method>``; the status and the answer's JSON object.

        An empty answer is ``{}``; JSON that is not an object comes back as ``{"Err": it}``.
        """
        status, data = self.post_raw(method, json.dumps(dict(body or {})).encode(), timeout)
        try:
            parsed = json.loads(data) if data.strip() else {}
        except ValueError as exc:
            raise PycniError(
                f"{self.path} answered /{method} with {status} and no JSON: {data[:100]!r}"
            ) from exc
        return status, parsed if isinstance(parsed, dict) else {"Err": parsed}

    def post_raw(
        self, method: str, data: bytes = b"{}", timeout: float | None = None
    ) -> tuple[int, bytes]:
        """POST ``data`` as it is (malformed on purpose, say) to ``/<method>``; status and bytes."""
        timeout = self.timeout if timeout is None else timeout
        conn = _UnixHTTPConnection(self.path, timeout)
        try:
            conn.request("POST", "/" + method, body=data, headers={"Content-Type": MEDIA_TYPE})
            response = conn.getresponse()
            return response.status, response.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise PycniError(f"nothing is listening on {self.path}") from exc
        except TimeoutError as exc:
            raise PycniError(f"{self.path} did not answer /{method} in {timeout:g}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise PycniError(f"/{method} on {self.path} failed: {exc}") from exc
        finally:
            conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket (the host name in the request is never looked up)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
