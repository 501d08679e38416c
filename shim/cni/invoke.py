"""Running a plugin binary: the one place pycni starts a process.

The shape follows libcni's ``pkg/invoke``: an :class:`Exec` seam (``find_in_path`` +
``exec_plugin``) that tests replace with a fake, a :class:`RawExec` that really runs the binary, and
:class:`Args` that become the ``CNI_*`` environment. The spec's protocol, briefly:

* the plugin gets its parameters in the environment (``CNI_COMMAND``, ``CNI_CONTAINERID``,
  ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS``, ``CNI_PATH``) on top of the runtime's own, and its
  network configuration as JSON on stdin;
* on success it exits 0 and prints its result (ADD, VERSION) or nothing;
* on failure it exits non-zero and prints ``{"code", "msg", "details"}`` on stdout.

No shell is ever involved: the binary is executed directly with an argument list.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import CNIError, InvalidRequest, PluginNotFound, PluginTimeout
from .config import validate_plugin_type

log = logging.getLogger(__name__)

#: libcni retries a plugin whose binary is still being written ("text file busy") this often.
TEXT_BUSY_RETRIES = 5
TEXT_BUSY_DELAY = 1.0


def format_cni_args(pairs: Sequence[tuple[str, str]]) -> str:
    """``[("IP", "10.200.0.5")]`` → ``"IP=10.200.0.5"``.

    CNI_ARGS has no escaping: ``;`` separates pairs and the first ``=`` splits key from value. A
    key or value that would change how a plugin splits the string is refused, never passed on.
    """
    parts = []
    for key, value in pairs:
        if not key or any(c in key for c in "=;\x00") or any(c in value for c in ";\x00"):
            raise InvalidRequest(
                f"CNI_ARGS entry {key!r}={value!r} is not allowed: keys may not contain '=' or "
                "';' and values may not contain ';'"
            )
        parts.append(f"{key}={value}")
    return ";".join(parts)


def parse_cni_args(value: str) -> list[tuple[str, str]]:
    """The inverse of :func:`format_cni_args`, for ``CNI_ARGS`` given by a user."""
    pairs = []
    for item in value.split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"invalid CNI_ARGS entry {item!r}: want KEY=VALUE")
        pairs.append((key, val))
    return pairs


@dataclass(frozen=True)
class Args:
    """The parameters of one plugin call, as libcni's ``invoke.Args``."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    plugin_args: tuple[tuple[str, str], ...] = ()
    path: str = ""

    def as_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The runtime's environment with the ``CNI_*`` variables on top (ours win)."""
        env = dict(os.environ if base is None else base)
        env.update(
            {
                "CNI_COMMAND": self.command,
                "CNI_CONTAINERID": self.container_id,
                "CNI_NETNS": self.netns,
                "CNI_ARGS": format_cni_args(self.plugin_args),
                "CNI_IFNAME": self.ifname,
                "CNI_PATH": self.path,
            }
        )
        return env


class Exec(Protocol):
    """How plugins are found and run. :class:`RawExec` runs them; tests pass a fake."""

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        """The absolute path of ``plugin`` in the first directory of ``paths`` that has it."""
        ...

    def exec_plugin(
        self, plugin_path: str, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> bytes:
        """Run the plugin; its stdout on success, :class:`CNIError` on any failure."""
        ...


def find_in_path(plugin: str, paths: Sequence[str]) -> str:
    validate_plugin_type(plugin)
    if not paths:
        raise PluginNotFound(f"no CNI_PATH set to look for plugin {plugin!r} in", plugin=plugin)
    for directory in paths:
        candidate = os.path.join(directory, plugin)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise PluginNotFound(
        f"failed to find plugin {plugin!r} in path {list(paths)}", plugin=plugin
    )


def error_from_output(plugin: str, verb: str, stdout: bytes, stderr: bytes, rc: int) -> CNIError:
    """The error a failed plugin reported: stdout's ``{code,msg,details}``, else its stderr."""
    text = stdout.strip()
    if text:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("msg"), str):
            code = data.get("code")
            return CNIError(
                data["msg"],
                plugin=plugin,
                verb=verb,
                code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
                details=str(data.get("details") or ""),
            )
        return CNIError(
            f"plugin failed (exit {rc}) but its error output is not a CNI error object: "
            f"{_excerpt(text)}",
            plugin=plugin,
            verb=verb,
        )
    if stderr.strip():
        return CNIError(f"{_excerpt(stderr.strip())} (exit {rc})", plugin=plugin, verb=verb)
    return CNIError(f"plugin exited with status {rc} and printed nothing", plugin=plugin, verb=verb)


def _excerpt(data: bytes, limit: int = 500) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "…"


class RawExec:
    """Runs plugin binaries for real, with a timeout and libcni's "text file busy" retry."""

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        return find_in_path(plugin, paths)

    def exec_plugin(
        self, plugin_path: str, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> bytes:
        plugin = os.path.basename(plugin_path)
        verb = env.get("CNI_COMMAND", "")
        for attempt in range(TEXT_BUSY_RETRIES):
            try:
                returncode, stdout, stderr = _run_in_own_group(plugin_path, stdin, env, timeout)
            except subprocess.TimeoutExpired as exc:
                raise PluginTimeout(
                    f"no answer after {timeout:g}s; the plugin was killed, and every process "
                    "it started",
                    plugin=plugin,
                    verb=verb,
                    code=CNIError.TRY_AGAIN_LATER,
                ) from exc
            except OSError as exc:
                if exc.errno == errno.ETXTBSY and attempt + 1 < TEXT_BUSY_RETRIES:
                    time.sleep(TEXT_BUSY_DELAY)
                    continue
                if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC):
                    raise PluginNotFound(
                        f"cannot execute {plugin_path}: {exc.strerror}", plugin=plugin, verb=verb
                    ) from exc
                raise CNIError(
                    f"cannot execute {plugin_path}: {exc.strerror}", plugin=plugin, verb=verb
                ) from exc
            if stderr:
                log.debug("%s %s stderr: %s", plugin, verb, _excerpt(stderr, 2000))
            if returncode != 0:
                raise error_from_output(plugin, verb, stdout, stderr, returncode)
            return stdout
        raise AssertionError("unreachable")  # pragma: no cover


#: how long the pipes of a killed plugin's group may take to close
_REAP_TIMEOUT = 5.0


def _run_in_own_group(plugin_path: str, stdin: bytes, env: Mapping[str, str], timeout: float
                      ) -> tuple[int, bytes, bytes]:
    """Run the plugin in a process group of its own, so that a plugin that hangs is killed with
    everything it started (a child holding the plugin's stdout would otherwise outlive it and
    keep the pipe open); raises ``subprocess.TimeoutExpired`` after killing them."""
    proc = subprocess.Popen(
        [plugin_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(env), close_fds=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=_REAP_TIMEOUT)
        except subprocess.TimeoutExpired:  # a child that left the group holds a pipe
            proc.kill()
            proc.wait()
        raise
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc.returncode, stdout, stderr


def decode_json(plugin: str, verb: str, stdout: bytes) -> Any:
    """A plugin's stdout as JSON, or a decoding error that names the plugin."""
    try:
        return json.loads(stdout)
    except ValueError as exc:
        raise CNIError(
            f"output is not valid JSON ({exc}): {_excerpt(stdout.strip())}",
            plugin=plugin,
            verb=verb,
            code=CNIError.DECODING_FAILURE,
        ) from exc
