"""The overlay's key-value store: etcd v3, through its JSON gateway (etcd3gw).

:class:`KV` is the seam: the handful of etcd operations the overlay needs, each atomic where
etcd's are. :class:`Etcd` is the real one, and the only place that sees etcd3gw's and requests'
exceptions: every failure to reach etcd, or an error it answers, becomes
:class:`~shim.errors.StoreUnavailable` naming the URL. Unit tests use an in-memory fake with the
same transaction semantics (``tests/fakeetcd.py``).

Keys and values are text; a lease is etcd's lease id (0 for none). Create-if-absent is etcd's
transaction comparing the key's ``create_revision`` with 0 — of two hosts racing for one key,
exactly one wins.

A :class:`Watch` is etcd's watch on a prefix, from the revision it was opened at: the keys of
each change as etcd streams them, until etcd ends the stream (a restart, a compaction, a
cancel, or no word, not even a progress notification, for :data:`WATCH_READ_TIMEOUT`). It
resumes from no revision: whoever watches reads the whole prefix again after opening one, so
nothing that changed while none was open is missed.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidRequest, StoreUnavailable

#: a watch that heard nothing for this long is closed and opened again (a partition sends no
#: RST); etcd sends an idle watch a progress notification every 10 minutes (its default), so a
#: live one never goes quiet that long
WATCH_READ_TIMEOUT = 900.0


class Watch(Protocol):
    """Changes under a prefix, as they happen."""

    def __iter__(self) -> Iterator[list[str]]:
        """The keys each change touched; ends when etcd ends the watch or it is closed."""
        ...

    def close(self) -> None:
        """End the watch from another thread (the iteration stops)."""
        ...


class KV(Protocol):
    """What the overlay asks of its store."""

    #: how errors name the store ("etcd at http://10.0.0.1:2379")
    where: str

    def get(self, key: str) -> str | None: ...

    def get_prefix(self, prefix: str) -> dict[str, str]: ...

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        """Put ``key`` only if it does not exist; whether it was put."""
        ...

    def replace(self, key: str, old: str, new: str, lease: int = 0) -> bool:
        """Put ``new`` only if ``key`` holds ``old``; whether it was put."""
        ...

    def delete_if(self, key: str, value: str) -> bool:
        """Delete ``key`` only if it holds ``value``; whether it was deleted."""
        ...

    def delete_prefix_if_alone(self, key: str, prefix: str) -> bool:
        """Delete ``key`` only if no key starts with ``prefix``; whether it was deleted."""
        ...

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        ...

    def refresh(self, lease: int) -> int:
        """Keep ``lease`` alive; its TTL now, or -1 if it has expired (or never was)."""
        ...

    def revoke(self, lease: int) -> None:
        """End ``lease`` and delete its keys; a lease already gone is fine."""
        ...

    def watch(self, prefix: str) -> Watch:
        """Changes under ``prefix`` from now on (see :class:`Watch`)."""
        ...


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def _prefix_end(prefix: str) -> str:
    """etcd's range end for a prefix: the prefix with its last byte incremented."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


@dataclass(frozen=True)
class Endpoint:
    """Where etcd is: ``http[s]://host:port``, and the TLS files a client presents."""

    url: str
    ca: str = ""
    cert: str = ""
    key: str = ""

    def parts(self) -> tuple[str, str, int]:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidRequest(f"etcd URL {self.url!r}: expected http[s]://HOST:PORT")
        return parsed.scheme, parsed.hostname, parsed.port or 2379


class Etcd:
    """:class:`KV` on a real etcd (3.4 or later), through etcd3gw."""

    def __init__(self, endpoint: Endpoint, timeout: float = 5.0) -> None:
        import requests  # only a server with --etcd needs these
        from etcd3gw.client import Etcd3Client

        scheme, host, port = endpoint.parts()
        self.where = f"etcd at {endpoint.url}"
        session = requests.Session()
        # etcd is reached directly, with the TLS files given: no HTTP(S)_PROXY, and no
        # REQUESTS_CA_BUNDLE from the environment overriding the CA (requests prefers it)
        session.trust_env = False
        if endpoint.ca:
            session.verify = endpoint.ca
        if endpoint.cert:
            session.cert = (endpoint.cert, endpoint.key) if endpoint.key else endpoint.cert
        self._client = Etcd3Client(
            host=host, port=port, protocol=scheme, timeout=timeout, session=session,
            api_path="/v3/",  # 3.4+: no discovery round trip on every new client
        )

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        from etcd3gw.exceptions import Etcd3Exception
        from requests.exceptions import RequestException

        try:
            return self._client.post(self._client.get_url(path), json=body)
        except (Etcd3Exception, RequestException, ValueError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"{self.where} did not answer: {detail}") from exc

    def get(self, key: str) -> str | None:
        kvs = self._post("/kv/range", {"key": _b64(key)}).get("kvs") or []
        return _text(kvs[0].get("value", "")) if kvs else None

    def get_prefix(self, prefix: str) -> dict[str, str]:
        body = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        kvs = self._post("/kv/range", body).get("kvs") or []
        return {_text(kv["key"]): _text(kv.get("value", "")) for kv in kvs}

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        answer = self._post("/kv/txn", {"compare": compare, "success": success, "failure": []})
        return bool(answer.get("succeeded"))

    @staticmethod
    def _put(key: str, value: str, lease: int) -> dict[str, Any]:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = lease
        return {"request_put": put}

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        absent = {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}
        return self._txn([absent], [self._put(key, value, lease)])

    def replace(self, key: str, old: str, new: str, lease: int = 0) -> bool:
        holds = {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(old)}
        return self._txn([holds], [self._put(key, new, lease)])

    def delete_if(self, key: str, value: str) -> bool:
        holds = {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(value)}
        return self._txn([holds], [{"request_delete_range": {"key": _b64(key)}}])

    def delete_prefix_if_alone(self, key: str, prefix: str) -> bool:
        # etcd compares a range too: no key in [prefix, end) was ever created, i.e. none exists
        none = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "result": "EQUAL",
                "target": "CREATE", "create_revision": 0}
        return self._txn([none], [{"request_delete_range": {"key": _b64(key)}}])

    def grant(self, ttl: int) -> int:
        return int(self._post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def refresh(self, lease: int) -> int:
        answer = self._post("/lease/keepalive", {"ID": lease})
        return int((answer.get("result") or {}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        try:
            self._post("/kv/lease/revoke", {"ID": lease})
        except StoreUnavailable as exc:
            if "not found" not in str(exc):
                raise

    def watch(self, prefix: str) -> Watch:
        # etcd3gw's own watcher hides the end of the stream (a restart, a compaction): the
        # watcher must know it to read again, so the stream is read here, on etcd3gw's session
        from requests.exceptions import RequestException

        create: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)),
                                  "progress_notify": True}
        try:
            response = self._client.session.post(
                self._client.get_url("/watch"), json={"create_request": create}, stream=True,
                timeout=(self._client.timeout, WATCH_READ_TIMEOUT))
            response.raise_for_status()
        except RequestException as exc:
            raise StoreUnavailable(f"{self.where} did not open a watch: {exc}") from exc
        return _EtcdWatch(response)


class _EtcdWatch:
    """One watch stream of etcd's JSON gateway: a JSON object per line, ``{"result": {...}}``
    (``created`` first, then ``events``; ``canceled`` when etcd ends it, e.g. compacted)."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[list[str]]:
        from requests.exceptions import RequestException

        try:
            for line in self._response.iter_lines():
                if not line.strip():
                    continue
                result = json.loads(line).get("result")
                if not isinstance(result, dict) or result.get("canceled"):
                    return  # an error, or etcd ended the watch
                keys = [_text(e["kv"]["key"]) for e in result.get("events") or []]
                if keys:
                    yield keys
        except (RequestException, OSError, ValueError, KeyError):
            return  # the stream broke: etcd went away, or the read timed out
        finally:
            self._response.close()

    def close(self) -> None:
        # closing the response from another thread does not wake a read blocked on it; a
        # shutdown of its socket does
        try:
            with socket.fromfd(self._response.raw.fileno(), socket.AF_INET,
                               socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError, AttributeError):
            pass
        self._response.close()
