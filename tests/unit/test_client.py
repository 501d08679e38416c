"""``shim.client``: pycni's plugin-socket client against a real unix socket in ``tmp_path``.

A tiny HTTP server answers on the socket from a thread; nothing here needs root.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from shim.client import MEDIA_TYPE, PluginClient
from shim.errors import PycniError

pytestmark = pytest.mark.unit


class PluginServer(socketserver.UnixStreamServer):
    """Answers ``POST /<Method>`` from a table and remembers each request."""

    def __init__(self, path: str, answers: dict[str, tuple[int, bytes]]) -> None:
        super().__init__(path, Handler)
        self.path = path
        self.answers = answers
        self.requests: list[tuple[str, str, bytes]] = []


class Handler(BaseHTTPRequestHandler):
    server: PluginServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, self.headers.get("Content-Type", ""), body))
        status, data = self.server.answers.get(self.path, (404, b'{"Err": "no such method"}'))
        self.send_response(status)
        self.send_header("Content-Type", MEDIA_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PluginServer]:
    srv = PluginServer(str(tmp_path / "pycni.sock"), {})
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_a_json_answer(server: PluginServer) -> None:
    server.answers["/Plugin.Activate"] = (200, b'{"Implements": ["NetworkDriver"]}')
    status, body = PluginClient(server.path).post("Plugin.Activate")
    assert (status, body) == (200, {"Implements": ["NetworkDriver"]})
    assert server.requests == [("/Plugin.Activate", MEDIA_TYPE, b"{}")]


def test_an_error_status_is_an_answer(server: PluginServer) -> None:
    server.answers["/NetworkDriver.Join"] = (500, b'{"Err": "CNI plugin \\"bridge\\" failed"}')
    client = PluginClient(server.path)
    status, body = client.post("NetworkDriver.Join", {"EndpointID": "e1"})
    assert (status, body) == (500, {"Err": 'CNI plugin "bridge" failed'})
    assert json.loads(server.requests[0][2]) == {"EndpointID": "e1"}
    assert client.post_raw("NetworkDriver.Nope", b"{not json") == (
        404,
        b'{"Err": "no such method"}',
    )
    assert server.requests[-1][2] == b"{not json"


def test_answers_that_are_not_a_json_object(server: PluginServer) -> None:
    server.answers["/Empty"] = (200, b"")
    server.answers["/List"] = (400, b'["no"]')
    server.answers["/Html"] = (500, b"<html>Internal Server Error</html>")
    client = PluginClient(server.path)
    assert client.post("Empty") == (200, {})
    assert client.post("List") == (400, {"Err": ["no"]})
    with pytest.raises(PycniError, match="answered /Html with 500 and no JSON"):
        client.post("Html")


def test_nothing_listening(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    with pytest.raises(PycniError, match=f"^nothing is listening on {path}$"):
        PluginClient(path).post("Plugin.Activate")
    # a socket file left behind by a server that is gone
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)
    with pytest.raises(PycniError, match=f"^nothing is listening on {path}$"):
        PluginClient(path).post_raw("Plugin.Activate")


def test_a_server_that_never_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen()  # the connection is queued, never served
        with pytest.raises(PycniError, match="did not answer /Plugin.Activate in 0.2s"):
            PluginClient(path, timeout=0.2).post("Plugin.Activate")
