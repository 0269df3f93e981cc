"""Server configuration: defaults, then a TOML file, then flags; bad settings are ConfigError."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from server.compilers import same_binary_aliases
from server.config import ConfigError, ServerConfig, load


def toml_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_no_file_and_no_flags_gives_the_defaults() -> None:
    config = load([])

    assert config.port == 3632
    assert config.stats_port == 3633
    assert config.agent_port is None
    assert config.job_lifetime == 1200.0
    assert config.allow == ["127.0.0.0/8", "::1/128"]
    assert config.jobs >= 1


def test_toml_keys_are_the_flag_names_with_dashes(tmp_path: Path) -> None:
    path = toml_file(
        tmp_path,
        'job-lifetime = 600\nstats-port = 4000\nlog-format = "json"\nallow = ["10.0.0.0/8"]\n',
    )

    config = load(["--config", path])

    assert config.job_lifetime == 600
    assert config.stats_port == 4000
    assert config.log_format == "json"
    assert config.allow == ["10.0.0.0/8"]


def test_toml_keys_may_use_underscores(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "job_lifetime = 30\nshutdown_grace = 5\nmax_source_mb = 64\n")

    config = load(["--config", path])

    assert (config.job_lifetime, config.shutdown_grace, config.max_source_mb) == (30, 5, 64)


def test_flags_override_the_toml_file(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'port = 4632\njobs = 2\nallow = ["10.0.0.0/8"]\n')

    config = load(["--config", path, "--port", "5632", "--allow", "192.168.0.0/16"])

    assert config.port == 5632
    assert config.allow == ["192.168.0.0/16"]
    assert config.jobs == 2


def test_flags_override_the_toml_file_whatever_their_position(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "job-lifetime = 600\n")

    config = load(["--job-lifetime", "90", "--config", path])

    assert config.job_lifetime == 90


def test_repeated_flags_accumulate() -> None:
    config = load(["--allow", "10.0.0.0/8", "--allow", "fd00::/8", "-j", "3"])

    assert config.allow == ["10.0.0.0/8", "fd00::/8"]
    assert config.jobs == 3


def test_unknown_toml_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "port = 3632\nworkers = 8\n")

    with pytest.raises(ConfigError, match="workers"):
        load(["--config", path])


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load(["--config", str(tmp_path / "absent.toml")])


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "port = = 3\n")

    with pytest.raises(ConfigError, match="--config"):
        load(["--config", path])


@pytest.mark.parametrize("name", ["sh", "bash", "env", "python3"])
def test_shell_as_compiler_flag_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="--compiler"):
        load(["--compiler", "gcc", "--compiler", name])


def test_shell_as_compiler_in_toml_is_refused(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'compiler = ["gcc", "sh"]\n')

    with pytest.raises(ConfigError, match="sh"):
        load(["--config", path])


def test_compiler_given_as_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="bare name"):
        load(["--compiler", "/usr/bin/gcc"])


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-network", "10.0.0.300/8", "::1/129", ""])
def test_bad_cidr_is_refused(cidr: str) -> None:
    with pytest.raises(ConfigError, match="--allow"):
        load(["--allow", cidr])


def test_bad_cidr_in_toml_is_refused(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'allow = ["10.0.0.0/8", "10.0.0.0/99"]\n')

    with pytest.raises(ConfigError, match="--allow"):
        load(["--config", path])


def test_allow_list_becomes_networks_with_host_bits_ignored() -> None:
    config = load(["--allow", "10.1.2.3/8", "--allow", "2001:db8::1/32"])

    assert config.networks() == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        (["--jobs", "0"], "--jobs"),
        (["--job-lifetime", "0"], "--job-lifetime"),
        (["--job-lifetime", "-5"], "--job-lifetime"),
    ],
)
def test_unworkable_numbers_are_refused(flags: list[str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load(flags)


def test_unknown_log_format_in_toml_is_refused(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'log-format = "xml"\n')

    with pytest.raises(ConfigError, match="--log-format"):
        load(["--config", path])


def test_validate_accepts_the_defaults() -> None:
    ServerConfig().validate()


def test_toml_value_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'jobs = "8"\n')

    with pytest.raises(ConfigError, match="jobs"):
        load(["--config", path])


def test_an_explicit_compiler_admits_its_target_prefixed_alias_of_the_same_binary(
    tmp_path: Path,
) -> None:
    # Debian's client sends "x86_64-linux-gnu-gcc" for "gcc": the same binary, admitted.
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "x86_64-linux-gnu-tool").symlink_to("tool")
    other = tmp_path / "aarch64-linux-gnu-tool"  # another binary with the pattern: not
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    (tmp_path / "c99-tool").symlink_to("tool")  # a wrapper name, not a target triplet
    aliases = same_binary_aliases("tool", str(tool), str(tmp_path))
    assert aliases == {"x86_64-linux-gnu-tool": str(tmp_path / "x86_64-linux-gnu-tool")}
