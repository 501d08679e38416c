"""shim.cni.invoke: the CNI_* environment, plugin errors, and RawExec running real tiny plugins."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from shim.cni import invoke
from shim.cni.invoke import (
    Args,
    RawExec,
    decode_json,
    error_from_output,
    find_in_path,
    format_cni_args,
    parse_cni_args,
)
from shim.errors import CNIError, ConfigError, InvalidRequest, PluginNotFound, PluginTimeout

pytestmark = pytest.mark.unit


def plugin(directory: Path, name: str, body: str, mode: int = 0o755) -> str:
    """A ``#!/bin/sh`` plugin called ``name`` in ``directory``."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return str(path)


# --- the environment -----------------------------------------------------------------------------


def test_as_env_puts_cni_vars_on_top_of_the_base() -> None:
    args = Args(
        command="ADD",
        container_id="c1",
        netns="/run/netns/x",
        ifname="eth1",
        plugin_args=(("IP", "10.1.0.5"), ("K8S_POD_NAME", "web")),
        path="/opt/cni/bin:/usr/lib/cni",
    )
    env = args.as_env(
        {"PATH": "/usr/bin", "CNI_COMMAND": "DEL", "CNI_IFNAME": "bogus", "HOME": "/root"}
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth1",
        "CNI_ARGS": "IP=10.1.0.5;K8S_POD_NAME=web",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }


def test_as_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYCNI_UNIT_MARKER", "present")
    monkeypatch.setenv("CNI_COMMAND", "LEAKED")
    monkeypatch.setenv("CNI_ARGS", "LEAKED=1")
    env = Args(command="VERSION").as_env()
    assert env["PYCNI_UNIT_MARKER"] == "present"
    assert env["CNI_COMMAND"] == "VERSION"
    # every CNI_* variable is set, empty when unused: nothing leaks from the runtime's own env
    assert env["CNI_ARGS"] == ""
    assert env["CNI_CONTAINERID"] == env["CNI_NETNS"] == env["CNI_IFNAME"] == ""
    assert os.environ["CNI_COMMAND"] == "LEAKED"  # the base is not modified


def test_format_cni_args() -> None:
    assert format_cni_args([]) == ""
    assert format_cni_args([("IgnoreUnknown", "1")]) == "IgnoreUnknown=1"
    # a value may contain '=': the plugin splits at the first one
    assert format_cni_args([("A", "x=y"), ("B", "")]) == "A=x=y;B="


@pytest.mark.parametrize(
    ("key", "value"),
    [("A=B", "1"), ("A;B", "1"), ("A", "1;B=2"), ("", "1"), ("A\x00", "1"), ("A", "x\x00")],
)
def test_format_cni_args_refuses_what_would_split_differently(key: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        format_cni_args([("OK", "1"), (key, value)])
    assert "not allowed" in str(info.value)


def test_args_with_bad_cni_args_fail_before_any_exec() -> None:
    with pytest.raises(InvalidRequest):
        Args(command="ADD", plugin_args=(("IP", "10.0.0.1;EVIL=1"),)).as_env({})


def test_parse_cni_args() -> None:
    assert parse_cni_args("") == []
    assert parse_cni_args("A=1;B=x=y;;C=") == [("A", "1"), ("B", "x=y"), ("C", "")]
    pairs = [("IP", "10.0.0.5"), ("MAC", "aa:bb:cc:dd:ee:ff")]
    assert parse_cni_args(format_cni_args(pairs)) == pairs


@pytest.mark.parametrize("value", ["A", "A=1;B", "=1", "A=1;=2"])
def test_parse_cni_args_refuses_entries_without_key_and_equals(value: str) -> None:
    with pytest.raises(InvalidRequest, match="want KEY=VALUE"):
        parse_cni_args(value)


# --- errors from output --------------------------------------------------------------------------


def test_error_from_json_on_stdout() -> None:
    out = json.dumps(
        {
            "cniVersion": "1.0.0",
            "code": 11,
            "msg": "no IPs left",
            "details": "range 10.1.0.0/24 is full",
        }
    ).encode()
    exc = error_from_output("host-local", "ADD", out, b"ignored stderr", 1)
    assert (exc.plugin, exc.verb, exc.code, exc.msg, exc.details) == (
        "host-local",
        "ADD",
        11,
        "no IPs left",
        "range 10.1.0.0/24 is full",
    )
    assert str(exc) == (
        'CNI plugin "host-local" failed (ADD): [code 11] no IPs left: range 10.1.0.0/24 is full'
    )
    assert exc.to_json() == {
        "code": 11,
        "msg": "no IPs left",
        "details": "range 10.1.0.0/24 is full",
    }


@pytest.mark.parametrize("code", ["11", True, None, 1.5])
def test_error_with_a_non_integer_code(code: object) -> None:
    exc = error_from_output("p", "DEL", json.dumps({"code": code, "msg": "m"}).encode(), b"", 1)
    assert exc.code == 0
    assert str(exc) == 'CNI plugin "p" failed (DEL): m'


def test_error_with_garbage_stdout() -> None:
    exc = error_from_output("p", "ADD", b"panic: runtime error\n", b"stack trace", 2)
    assert exc.plugin == "p" and exc.verb == "ADD"
    assert "not a CNI error object" in exc.msg
    assert "(exit 2)" in exc.msg
    assert "panic: runtime error" in exc.msg


def test_error_with_json_that_is_not_an_error_object() -> None:
    exc = error_from_output("p", "ADD", b'{"code": 3}', b"", 1)
    assert "not a CNI error object" in exc.msg


def test_error_with_stderr_only() -> None:
    exc = error_from_output("p", "CHECK", b"  \n", b"cannot open /dev/net/tun\n", 3)
    assert exc.msg == "cannot open /dev/net/tun (exit 3)"
    assert str(exc) == 'CNI plugin "p" failed (CHECK): cannot open /dev/net/tun (exit 3)'


def test_error_with_no_output_at_all() -> None:
    exc = error_from_output("p", "DEL", b"", b"", 137)
    assert exc.msg == "plugin exited with status 137 and printed nothing"


def test_long_output_is_cut() -> None:
    exc = error_from_output("p", "ADD", b"", b"x" * 5000, 1)
    assert len(exc.msg) < 600
    assert "…" in exc.msg


def test_decode_json() -> None:
    assert decode_json("p", "ADD", b'{"a": 1}') == {"a": 1}
    with pytest.raises(CNIError) as info:
        decode_json("p", "VERSION", b"Usage: p [options]")
    assert (info.value.plugin, info.value.verb, info.value.code) == (
        "p",
        "VERSION",
        CNIError.DECODING_FAILURE,
    )
    assert "Usage: p [options]" in info.value.msg


def test_label_fills_only_what_is_missing() -> None:
    exc = CNIError("boom", code=5)
    assert str(exc) == "CNI failed: [code 5] boom"
    assert exc.label("bridge", "ADD") is exc
    assert str(exc) == 'CNI plugin "bridge" failed (ADD): [code 5] boom'
    assert exc.args == (str(exc),)
    exc.label("other", "DEL")
    assert (exc.plugin, exc.verb) == ("bridge", "ADD")


# --- finding plugins -----------------------------------------------------------------------------


def test_find_in_path_takes_the_first_directory_that_has_it(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    plugin(b, "bridge", "exit 0\n")
    plugin(c, "bridge", "exit 0\n")
    plugin(a, "bridge", "exit 0\n", mode=0o644)  # not executable: skipped
    (a / "dirplugin").mkdir()
    assert find_in_path("bridge", [str(a), str(b), str(c)]) == str(b / "bridge")
    assert RawExec().find_in_path("bridge", [str(c)]) == str(c / "bridge")
    with pytest.raises(PluginNotFound) as info:
        find_in_path("dirplugin", [str(a)])
    assert info.value.plugin == "dirplugin"
    assert str(a) in str(info.value)


def test_find_in_path_with_no_path() -> None:
    with pytest.raises(PluginNotFound, match="no CNI_PATH"):
        find_in_path("bridge", [])


@pytest.mark.parametrize("name", ["../bridge", "/bin/sh", "a/b", ".."])
def test_find_in_path_refuses_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        find_in_path(name, [str(tmp_path)])


# --- RawExec with real processes -----------------------------------------------------------------


def env_for(command: str, **extra: str) -> dict[str, str]:
    env = Args(command=command, container_id="c1", ifname="eth0", netns="/run/netns/x").as_env()
    env.update(extra)
    return env


def test_raw_exec_success_passes_stdin_and_env(tmp_path: Path) -> None:
    path = plugin(
        tmp_path,
        "echo-plugin",
        "printf '{\"stdin\": '\ncat\n"
        'printf \', "cmd": "%s", "cid": "%s", "extra": "%s"}\' '
        '"$CNI_COMMAND" "$CNI_CONTAINERID" "$EXTRA"\n',
    )
    out = RawExec().exec_plugin(
        path, b'{"cniVersion": "1.0.0", "name": "n"}', env_for("ADD", EXTRA="kept"), 5.0
    )
    assert json.loads(out) == {
        "stdin": {"cniVersion": "1.0.0", "name": "n"},
        "cmd": "ADD",
        "cid": "c1",
        "extra": "kept",
    }


def test_raw_exec_empty_stdout_is_fine(tmp_path: Path) -> None:
    path = plugin(tmp_path, "quiet", "cat >/dev/null\necho 'noise' >&2\n")
    assert RawExec().exec_plugin(path, b"{}", env_for("DEL"), 5.0) == b""


def test_raw_exec_failure_reports_the_plugins_error(tmp_path: Path) -> None:
    path = plugin(
        tmp_path,
        "failing",
        "cat >/dev/null\n"
        'echo \'{"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "no bridge"}\'\n'
        "echo 'something on stderr' >&2\n"
        "exit 1\n",
    )
    with pytest.raises(CNIError) as info:
        RawExec().exec_plugin(path, b"{}", env_for("ADD"), 5.0)
    exc = info.value
    assert type(exc) is CNIError
    assert (exc.plugin, exc.verb, exc.code, exc.msg, exc.details) == (
        "failing",
        "ADD",
        7,
        "bad config",
        "no bridge",
    )


def test_raw_exec_failure_with_stderr_only(tmp_path: Path) -> None:
    path = plugin(tmp_path, "crashy", "echo 'segfault-ish' >&2\nexit 2\n")
    with pytest.raises(CNIError) as info:
        RawExec().exec_plugin(path, b"{}", env_for("DEL"), 5.0)
    assert info.value.msg == "segfault-ish (exit 2)"
    assert (info.value.plugin, info.value.verb) == ("crashy", "DEL")


def test_raw_exec_timeout_kills_quickly(tmp_path: Path) -> None:
    path = plugin(tmp_path, "sleepy", "exec sleep 5\n")  # exec: the kill leaves no orphan
    started = time.monotonic()
    with pytest.raises(PluginTimeout) as info:
        RawExec().exec_plugin(path, b"{}", env_for("ADD"), 0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert (info.value.plugin, info.value.verb) == ("sleepy", "ADD")
    assert info.value.code == CNIError.TRY_AGAIN_LATER
    assert "0.5s" in info.value.msg


def test_raw_exec_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFound) as info:
        RawExec().exec_plugin(str(tmp_path / "nope"), b"{}", env_for("ADD"), 5.0)
    assert (info.value.plugin, info.value.verb) == ("nope", "ADD")
    assert "cannot execute" in info.value.msg


def test_raw_exec_non_executable_file(tmp_path: Path) -> None:
    path = plugin(tmp_path, "noexec", "exit 0\n", mode=0o644)
    with pytest.raises(PluginNotFound) as info:
        RawExec().exec_plugin(path, b"{}", env_for("ADD"), 5.0)
    assert "Permission denied" in info.value.msg


def test_raw_exec_file_that_is_not_a_program(tmp_path: Path) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(b"\x00\x01\x02 not an ELF, no shebang")
    path.chmod(0o755)
    with pytest.raises(PluginNotFound) as info:
        RawExec().exec_plugin(str(path), b"{}", env_for("ADD"), 5.0)
    assert "Exec format error" in info.value.msg


def test_a_hanging_plugin_is_killed_with_every_process_it_started(tmp_path: Path) -> None:
    """A child holding the plugin's stdout would keep the pipe open (and the runtime waiting)
    long after the plugin itself was killed."""
    marker = f"pycni-hang-{os.getpid()}-{time.monotonic_ns()}"
    path = plugin(tmp_path, "hangs", f"export PYCNI_HANG={marker}\nsleep 300 &\nsleep 300\n")
    started = time.monotonic()
    with pytest.raises(PluginTimeout, match="and every process it started"):
        RawExec().exec_plugin(path, b"{}", env_for("ADD"), 0.5)
    assert time.monotonic() - started < 4.0
    deadline = time.monotonic() + 3
    left: list[str] = []
    while time.monotonic() < deadline:
        left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _environ_has(pid, marker)]
        if not left:
            break
        time.sleep(0.05)
    assert left == [], "the plugin's children outlived it"


def _environ_has(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def _text_file_busy_supported(path: str) -> bool:
    """Whether this kernel refuses to exec a file that is open for writing (ETXTBSY)."""
    with open(path, "r+b"):
        try:
            subprocess.run([path], capture_output=True, close_fds=True, check=False, timeout=5)
        except OSError as exc:
            return exc.errno == errno.ETXTBSY
    return False


def test_raw_exec_retries_text_file_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin still being written (held open for writing) is retried until it is closed.

    The writer is closed from a thread after 0.3 s; with 20 retries 0.05 s apart RawExec keeps
    trying for about a second, so the test does not depend on tight timing.
    """
    path = plugin(tmp_path, "busy", "cat >/dev/null\necho '{\"ok\": true}'\n")
    if not _text_file_busy_supported(path):
        pytest.skip("this kernel executes files that are open for writing (no ETXTBSY)")
    monkeypatch.setattr(invoke, "TEXT_BUSY_DELAY", 0.05)
    monkeypatch.setattr(invoke, "TEXT_BUSY_RETRIES", 20)
    writer = open(path, "r+b")  # noqa: SIM115 - closed by the timer thread
    timer = threading.Timer(0.3, writer.close)
    started = time.monotonic()
    timer.start()
    try:
        out = RawExec().exec_plugin(path, b"{}", env_for("ADD"), 5.0)
    finally:
        timer.cancel()
        writer.close()
    assert json.loads(out) == {"ok": True}
    # it did have to wait for the writer: the first attempts failed with ETXTBSY
    assert time.monotonic() - started >= 0.25


def test_raw_exec_gives_up_on_text_file_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = plugin(tmp_path, "busy", "exit 0\n")
    if not _text_file_busy_supported(path):
        pytest.skip("this kernel executes files that are open for writing (no ETXTBSY)")
    monkeypatch.setattr(invoke, "TEXT_BUSY_DELAY", 0.01)
    monkeypatch.setattr(invoke, "TEXT_BUSY_RETRIES", 3)
    with open(path, "r+b"), pytest.raises(CNIError) as info:
        RawExec().exec_plugin(path, b"{}", env_for("ADD"), 5.0)
    assert type(info.value) is CNIError
    assert "Text file busy" in info.value.msg
    assert (info.value.plugin, info.value.verb) == ("busy", "ADD")
