"""shim.cni.config: loading conf dirs the way libcni does, and every error naming file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shim.cni import config
from shim.cni.config import (
    find,
    load_all,
    load_file,
    parse,
    validate_container_id,
    validate_ifname,
    validate_network_name,
    validate_plugin_type,
)
from shim.errors import ConfigError, InvalidRequest, NotFound

pytestmark = pytest.mark.unit


def write(directory: Path, name: str, content: Any) -> str:
    path = directory / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def conflist(name: Any = "mynet", version: Any = "1.0.0", **extra: Any) -> dict[str, Any]:
    plugins = extra.pop("plugins", [{"type": "bridge", "bridge": "cni0"}, {"type": "portmap"}])
    return {"cniVersion": version, "name": name, "plugins": plugins, **extra}


def single(name: str = "mynet", version: str = "0.4.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "type": "bridge", **extra}


# --- loading -------------------------------------------------------------------------------------


def test_conflist_file_loads_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "10-mynet.conflist",
        conflist(
            disableCheck=True,
            disableGC=True,
            plugins=[
                {"type": "bridge", "isGateway": True, "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}},
            ],
        ),
    )
    net = load_file(path)
    assert net.name == "mynet"
    assert net.cni_version == "1.0.0"
    assert net.source == path
    assert net.disable_check is True
    assert net.disable_gc is True
    assert net.plugin_types() == ["bridge", "portmap"]
    assert net.plugins[0].raw == {
        "type": "bridge",
        "isGateway": True,
        "ipam": {"type": "host-local"},
    }
    # only capabilities declared true count
    assert net.plugins[1].capabilities == {"portMappings": True, "bandwidth": False}
    assert net.capabilities() == {"portMappings"}
    assert net.cni_versions == ()


def test_flags_default_to_false(tmp_path: Path) -> None:
    net = load_file(write(tmp_path, "a.conflist", conflist()))
    assert (net.disable_check, net.disable_gc) == (False, False)


@pytest.mark.parametrize("ext", [".conf", ".json"])
def test_single_plugin_conf_is_wrapped_into_a_list(tmp_path: Path, ext: str) -> None:
    raw = single(bridge="br0", ipam={"type": "host-local", "subnet": "10.1.0.0/24"})
    net = load_file(write(tmp_path, "10-mynet" + ext, raw))
    assert net.name == "mynet"
    assert net.cni_version == "0.4.0"
    assert len(net.plugins) == 1
    # the plugin keeps the whole original dict, name and cniVersion included
    assert net.plugins[0].raw == raw
    # the list is what libcni's ConfListFromConf builds
    assert net.raw == {"cniVersion": "0.4.0", "name": "mynet", "plugins": [raw]}
    assert json.loads(net.bytes) == net.raw


def test_unknown_keys_are_kept_verbatim(tmp_path: Path) -> None:
    raw = conflist(
        someRuntimeKey={"nested": [1, 2, {"x": None}]},
        plugins=[{"type": "bridge", "vendor.example/knob": {"a": 1}, "mtu": 1400}],
    )
    net = load_file(write(tmp_path, "x.conflist", raw))
    assert net.raw["someRuntimeKey"] == {"nested": [1, 2, {"x": None}]}
    assert net.plugins[0].raw == {"type": "bridge", "vendor.example/knob": {"a": 1}, "mtu": 1400}
    assert json.loads(net.bytes)["someRuntimeKey"] == {"nested": [1, 2, {"x": None}]}


def test_loaded_config_does_not_alias_the_input() -> None:
    raw = conflist()
    net = config.conflist_from_dict(raw)
    net.plugins[0].raw["mutated"] = True
    net.raw["plugins"][0]["other"] = True
    assert "mutated" not in raw["plugins"][0]
    assert "other" not in raw["plugins"][0]


def test_parse_tells_the_two_forms_apart() -> None:
    assert parse(json.dumps(conflist())).plugin_types() == ["bridge", "portmap"]
    assert parse(json.dumps(single())).plugin_types() == ["bridge"]
    assert parse(json.dumps(single()).encode()).name == "mynet"


def test_conflist_extension_requires_plugins(tmp_path: Path) -> None:
    path = write(tmp_path, "a.conflist", single())
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.source == path
    assert info.value.field == "plugins"


def test_with_version_copies(tmp_path: Path) -> None:
    net = load_file(write(tmp_path, "a.conflist", conflist(version="1.1.0")))
    older = net.with_version("1.0.0")
    assert (older.cni_version, older.raw["cniVersion"]) == ("1.0.0", "1.0.0")
    assert (net.cni_version, net.raw["cniVersion"]) == ("1.1.0", "1.1.0")


# --- versions ------------------------------------------------------------------------------------


def test_cni_versions_picks_the_newest_supported() -> None:
    net = parse(
        json.dumps(conflist(version="0.4.0", cniVersions=["0.3.1", "1.0.0", "9.9.9", "1.1.0"]))
    )
    assert net.cni_version == "1.1.0"
    assert net.raw["cniVersion"] == "1.1.0"
    # every declared version, newest first
    assert net.cni_versions == ("9.9.9", "1.1.0", "1.0.0", "0.4.0", "0.3.1")


def test_cni_versions_without_cni_version() -> None:
    raw = conflist(cniVersions=["0.4.0", "1.0.0"])
    del raw["cniVersion"]
    assert parse(json.dumps(raw)).cni_version == "1.0.0"


def test_cni_version_competes_with_cni_versions() -> None:
    """libcni sorts ``cniVersion`` in with ``cniVersions`` and takes the newest of them all."""
    net = parse(json.dumps(conflist(version="1.1.0", cniVersions=["0.4.0", "1.0.0"])))
    assert net.cni_version == "1.1.0"


def test_cni_versions_all_unknown_falls_back_to_cni_version() -> None:
    net = parse(json.dumps(conflist(version="0.4.0", cniVersions=["2.0.0", "3.0.0"])))
    assert net.cni_version == "0.4.0"


def test_cni_versions_all_unknown_and_no_cni_version() -> None:
    raw = conflist(cniVersions=["2.0.0"])
    del raw["cniVersion"]
    with pytest.raises(ConfigError) as info:
        parse(json.dumps(raw), "f.conflist")
    assert info.value.field == "cniVersions"
    assert "2.0.0" in str(info.value)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_every_supported_version_loads(version: str) -> None:
    assert parse(json.dumps(conflist(version=version))).cni_version == version


# --- errors name the file and the field -------------------------------------------------------


def load_error(tmp_path: Path, name: str, content: Any) -> tuple[ConfigError, str]:
    path = write(tmp_path, name, content)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.source == path
    assert str(info.value).startswith(path + ": ")
    return info.value, path


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"a string"', "must be a JSON object"),
    ],
)
def test_unparseable_files_name_the_file(tmp_path: Path, content: str, fragment: str) -> None:
    exc, _ = load_error(tmp_path, "bad.conflist", content)
    assert exc.field is None
    assert fragment in str(exc)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.conf"
    path.write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert info.value.source == str(path)
    assert "invalid JSON" in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.conflist")
    with pytest.raises(ConfigError) as info:
        load_file(missing)
    assert info.value.source == missing
    assert "cannot read" in str(info.value)


CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    # (case id, file name, content, field, message fragment)
    (
        "no-name",
        "a.conflist",
        {"cniVersion": "1.0.0", "plugins": [{"type": "x"}]},
        "name",
        "missing",
    ),
    ("name-not-str", "a.conflist", conflist(name=5), "name", "missing or not a string"),
    ("name-invalid", "a.conflist", conflist(name="my net"), "name", "invalid network name"),
    ("no-plugins", "a.conflist", {"cniVersion": "1.0.0", "name": "n"}, "plugins", "missing"),
    ("empty-plugins", "a.conflist", conflist(plugins=[]), "plugins", "empty"),
    ("plugins-not-list", "a.conflist", conflist(plugins={"type": "x"}), "plugins", "list"),
    (
        "plugin-not-obj",
        "a.conflist",
        conflist(plugins=[{"type": "x"}, "y"]),
        "plugins[1]",
        "JSON object",
    ),
    (
        "no-type",
        "a.conflist",
        conflist(plugins=[{"type": "x"}, {"bridge": "b"}]),
        "plugins[1].type",
        "missing",
    ),
    (
        "type-not-str",
        "a.conflist",
        conflist(plugins=[{"type": 7}]),
        "plugins[0].type",
        "not a string",
    ),
    (
        "type-slash",
        "a.conflist",
        conflist(plugins=[{"type": "../../bin/sh"}]),
        "plugins[0].type",
        "no '/'",
    ),
    (
        "type-abs",
        "a.conflist",
        conflist(plugins=[{"type": "/usr/bin/bridge"}]),
        "plugins[0].type",
        "bare executable name",
    ),
    (
        "type-dotdot",
        "a.conflist",
        conflist(plugins=[{"type": ".."}]),
        "plugins[0].type",
        "invalid plugin type '..'",
    ),
    (
        "caps-list",
        "a.conflist",
        conflist(plugins=[{"type": "p", "capabilities": ["ips"]}]),
        "plugins[0].capabilities",
        "must be an object",
    ),
    (
        "caps-str",
        "a.conflist",
        conflist(plugins=[{"type": "p", "capabilities": "ips"}]),
        "plugins[0].capabilities",
        "must be an object",
    ),
    (
        "no-version",
        "a.conflist",
        {"name": "n", "plugins": [{"type": "x"}]},
        "cniVersion",
        "missing",
    ),
    ("version-not-str", "a.conflist", conflist(version=1), "cniVersion", "string"),
    ("version-bad", "a.conflist", conflist(version="1.0"), "cniVersion", "MAJOR.MINOR.PATCH"),
    ("version-words", "a.conflist", conflist(version="latest"), "cniVersion", "MAJOR.MINOR.PATCH"),
    ("version-old", "a.conflist", conflist(version="0.2.0"), "cniVersion", "not supported"),
    ("version-new", "a.conflist", conflist(version="2.0.0"), "cniVersion", "not supported"),
    (
        "versions-not-list",
        "a.conflist",
        conflist(cniVersions="1.0.0"),
        "cniVersions",
        "list of version strings",
    ),
    (
        "versions-not-str",
        "a.conflist",
        conflist(cniVersions=["1.0.0", 1]),
        "cniVersions",
        "list of version strings",
    ),
    (
        "versions-bad",
        "a.conflist",
        conflist(cniVersions=["1.0.0", "one"]),
        "cniVersions",
        "MAJOR.MINOR.PATCH",
    ),
    (
        "disable-check-str",
        "a.conflist",
        conflist(disableCheck="yes"),
        "disableCheck",
        "true or false",
    ),
    ("disable-gc-int", "a.conflist", conflist(disableGC=1), "disableGC", "true or false"),
    ("conf-no-type", "a.conf", {"cniVersion": "0.4.0", "name": "n"}, "plugin.type", "missing"),
    ("conf-type-slash", "a.conf", single(type="x/y"), "plugin.type", "no '/'"),
    ("conf-no-name", "a.conf", {"cniVersion": "0.4.0", "type": "bridge"}, "name", "missing"),
    ("conf-bad-version", "a.json", single(version="0.4"), "cniVersion", "MAJOR.MINOR.PATCH"),
    ("conf-caps", "a.json", single(capabilities=True), "plugin.capabilities", "object"),
]


@pytest.mark.parametrize(
    ("filename", "content", "field", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_errors_name_file_and_field(
    tmp_path: Path, filename: str, content: dict[str, Any], field: str, fragment: str
) -> None:
    exc, path = load_error(tmp_path, filename, content)
    assert exc.field == field
    assert str(exc).startswith(f"{path}: {field}: ")
    assert fragment in str(exc)
    assert exc.status == 400 and exc.exit_code == 2


def test_plugin_type_error_is_not_doubled(tmp_path: Path) -> None:
    exc, path = load_error(tmp_path, "a.conflist", conflist(plugins=[{"type": "a/b"}]))
    assert str(exc) == (
        f"{path}: plugins[0].type: invalid plugin type 'a/b': must be a bare executable name "
        "(no '/')"
    )


def test_parse_without_a_file_says_network_config() -> None:
    with pytest.raises(ConfigError) as info:
        parse("{}")
    assert str(info.value) == "network config: name: missing or not a string"


# --- conf dirs -----------------------------------------------------------------------------------


def test_files_are_read_in_lexical_order(tmp_path: Path) -> None:
    write(tmp_path, "20-b.conflist", conflist(name="b"))
    write(tmp_path, "10-a.conf", single(name="a"))
    write(tmp_path, "30-c.json", single(name="c"))
    write(tmp_path, "05-ignored.txt", single(name="txt"))
    write(tmp_path, "README", "not a config")
    (tmp_path / "99-dir.conf").mkdir()
    assert config.config_files(str(tmp_path)) == [
        str(tmp_path / "10-a.conf"),
        str(tmp_path / "20-b.conflist"),
        str(tmp_path / "30-c.json"),
    ]
    found, errors = load_all(str(tmp_path))
    assert config.names(found) == ["a", "b", "c"]
    assert errors == []


def test_load_all_reports_broken_files_and_keeps_the_rest(tmp_path: Path) -> None:
    write(tmp_path, "10-good.conflist", conflist(name="good"))
    broken = write(tmp_path, "20-broken.conflist", "{oops")
    write(tmp_path, "30-good2.conf", single(name="good2"))
    found, errors = load_all(str(tmp_path))
    assert config.names(found) == ["good", "good2"]
    assert [e.source for e in errors] == [broken]


def test_missing_conf_dir_is_empty(tmp_path: Path) -> None:
    assert config.config_files(str(tmp_path / "nope")) == []
    assert load_all(str(tmp_path / "nope")) == ([], [])


def test_first_file_with_the_name_wins(tmp_path: Path) -> None:
    first = write(tmp_path, "10-first.conf", single(name="dup", version="0.3.1"))
    write(tmp_path, "20-second.conflist", conflist(name="dup", version="1.0.0"))
    write(tmp_path, "30-other.conflist", conflist(name="other"))
    net = find(str(tmp_path), "dup")
    assert net.source == first
    assert net.cni_version == "0.3.1"
    assert find(str(tmp_path), "other").source == str(tmp_path / "30-other.conflist")


def test_find_skips_broken_files_that_are_not_asked_for(tmp_path: Path) -> None:
    write(tmp_path, "10-broken.conflist", "{oops")
    write(tmp_path, "20-good.conflist", conflist(name="good"))
    assert find(str(tmp_path), "good").name == "good"


def test_find_not_found_hints_at_broken_files(tmp_path: Path) -> None:
    broken = write(tmp_path, "10-broken.conflist", "{oops")
    write(tmp_path, "20-good.conflist", conflist(name="good"))
    with pytest.raises(NotFound) as info:
        find(str(tmp_path), "wanted")
    text = str(info.value)
    assert text.startswith(f"no CNI network named 'wanted' in {tmp_path}")
    assert "files that failed to load" in text
    assert broken in text
    assert info.value.status == 404 and info.value.exit_code == 3


def test_find_not_found_without_broken_files_has_no_hint(tmp_path: Path) -> None:
    write(tmp_path, "20-good.conflist", conflist(name="good"))
    with pytest.raises(NotFound) as info:
        find(str(tmp_path), "wanted")
    assert str(info.value) == f"no CNI network named 'wanted' in {tmp_path}"


def test_find_in_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        find(str(tmp_path / "nope"), "x")


# --- validators ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["a", "0", "abc-DEF_1.2", "f" * 64, "cnitool-" + "0" * 20])
def test_valid_container_ids(cid: str) -> None:
    validate_container_id(cid)


@pytest.mark.parametrize(
    "cid", ["", "-abc", "_abc", ".abc", "a b", "a/b", "a:b", "a\nb", "é", "abc\n", "abc\r"]
)
def test_invalid_container_ids(cid: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_container_id(cid)


def test_missing_container_id_message() -> None:
    with pytest.raises(InvalidRequest, match="missing container id"):
        validate_container_id("")


@pytest.mark.parametrize("ifname", ["eth0", "a", "x" * 15, "net-1.v_2", "-x", "..."])
def test_valid_ifnames(ifname: str) -> None:
    validate_ifname(ifname)


@pytest.mark.parametrize(
    ("ifname", "fragment"),
    [
        ("", "missing"),
        ("x" * 16, "longer than 15"),
        ("a/b", "no '/'"),
        ("a:b", "no '/'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("eth0\n", "whitespace"),
        ("a\u00a0b", "whitespace"),
        (".", "not '.'"),
        ("..", "not '.'"),
    ],
)
def test_invalid_ifnames(ifname: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_ifname(ifname)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["mynet", "a", "My_Net-1.0", "9net"])
def test_valid_network_names(name: str) -> None:
    validate_network_name(name)


@pytest.mark.parametrize("name", ["", "-net", "my net", "my/net", "net:1", ".net", "net\n"])
def test_invalid_network_names(name: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_network_name(name)


@pytest.mark.parametrize("plugin_type", ["bridge", "host-local", "my.plugin", "a..b"])
def test_valid_plugin_types(plugin_type: str) -> None:
    validate_plugin_type(plugin_type)


@pytest.mark.parametrize("plugin_type", ["", "a/b", "/bin/sh", "..", ".", "x\x00y"])
def test_invalid_plugin_types(plugin_type: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_plugin_type(plugin_type, source="f.conf")
    assert (info.value.source, info.value.field) == ("f.conf", "type")
