"""Settings: flags, ITEM_SOCKET_* variables, one clear error per bad value, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from item_socket.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ITEM_SOCKET_"):
            monkeypatch.delenv(name)


def test_flags_are_parsed_into_typed_settings(tmp_path: Path) -> None:
    settings = load_settings(
        [
            "--port",
            "9001",
            "--data-dir",
            str(tmp_path),
            "--flush-interval",
            "0.25",
            "--max-message-bytes",
            "1048576",
            "--log-level",
            "DEBUG",
        ]
    )
    assert settings.port == 9001
    assert settings.data_dir == tmp_path
    assert settings.flush_interval == 0.25
    assert settings.max_message_bytes == 1048576
    assert settings.log_level == "DEBUG"


def test_environment_variables_are_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITEM_SOCKET_PORT", "9100")
    monkeypatch.setenv("ITEM_SOCKET_RATE_LIMIT", "50")
    settings = load_settings(["--port", "9200"])
    assert settings.port == 9200
    assert settings.rate_limit == 50


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--port", "0", "greater than or equal to 1"),
        ("--port", "65536", "less than or equal to 65535"),
        ("--port", "http", "valid integer"),
        ("--log-level", "LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("--flush-interval", "0", "greater than 0"),
        ("--flush-interval", "61", "less than or equal to 60"),
        ("--unload-grace", "-1", "greater than or equal to 0"),
        ("--compact-after", "0", "greater than or equal to 1"),
        ("--compact-max-age", "0", "greater than or equal to 1"),
        ("--max-message-bytes", "1000", "greater than or equal to 65536"),
        ("--rate-limit", "-5", "greater than or equal to 0"),
        ("--rate-burst", "0", "greater than or equal to 1"),
        ("--max-connections", "-1", "greater than or equal to 0"),
        ("--shutdown-grace", "0", "greater than 0"),
        ("--ping-interval", "0", "greater than 0"),
        ("--auth-secret-file", "/nonexistent/secret", "not a readable file"),
    ],
)
def test_each_bad_value_is_named_in_its_error(flag: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings([flag, value])
    message = str(caught.value)
    assert message.count("\n") == 0, message
    assert message.startswith(f"{flag} (ITEM_SOCKET_{flag[2:].upper().replace('-', '_')}, from flag)")
    assert expected in message
    assert repr(value) in message


def test_empty_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("\n")
    with pytest.raises(SettingsError, match=r"--auth-secret-file .*is empty"):
        load_settings(["--auth-secret-file", str(secret)])


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITEM_SOCKET_FLUSH_INTERVAL", "soon")
    with pytest.raises(SettingsError, match=r"ITEM_SOCKET_FLUSH_INTERVAL, from environment\): .*number"):
        load_settings([])


def test_cors_origins_are_split() -> None:
    assert Settings(cors_allowed_origins="*").allowed_origins() == "*"
    assert Settings(cors_allowed_origins="https://a.example, https://b.example").allowed_origins() == [
        "https://a.example",
        "https://b.example",
    ]
    assert Settings(cors_allowed_origins="").allowed_origins() is None


def test_cli_exits_2_with_one_line_per_bad_field(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "item_socket",
            "--port",
            "99999",
            "--flush-interval",
            "-1",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("item-socket: error: --port ")
    assert lines[1].startswith("item-socket: error: --flush-interval ")


SCALE_OUT = [
    "--redis-url",
    "redis://redis.test:6379/0",
    "--store-url",
    "postgresql://spaced@127.0.0.1/spaced",
]


@pytest.mark.parametrize(
    ("flag", "url", "password_flag"),
    [
        ("--redis-url", "redis://:s3cret@redis.test:6379/0", "--redis-password-file"),
        ("--redis-url", "redis://redis.test:6379/0?password=s3cret", "--redis-password-file"),
        ("--redis-url", "unix:///run/redis.sock?db=0&PASSWORD=s3cret", "--redis-password-file"),
        ("--store-url", "postgresql://spaced:s3cret@127.0.0.1/spaced", "--store-password-file"),
        ("--store-url", "postgresql://spaced@127.0.0.1/spaced?password=s3cret", "--store-password-file"),
        (
            "--store-url",
            "postgres://spaced@127.0.0.1/spaced?sslmode=disable&password=s3cret",
            "--store-password-file",
        ),
    ],
)
def test_a_password_in_a_url_is_refused_naming_the_file_flag_and_never_echoed(
    flag: str, url: str, password_flag: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings([flag, url])
    message = str(caught.value)
    assert message.startswith(f"{flag} (")
    assert f"must not carry a password; put it in {password_flag}" in message
    assert "s3cret" not in message and "***" in message


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_both_postgresql_schemes_are_accepted(scheme: str) -> None:
    url = f"{scheme}://spaced@postgres.test:5432/spaced?sslmode=disable&options=-c%20search_path%3Ddocs"
    assert load_settings(["--store-url", url]).store_url == url


@pytest.mark.parametrize(
    ("flag", "url", "expected"),
    [
        ("--store-url", "mysql://spaced@127.0.0.1/spaced", "must be a postgresql:// or postgres:// URL"),
        ("--redis-url", "http://redis.test:6379", "must be a redis://, rediss:// or unix:// URL"),
        (
            "--store-url",
            "postgresql://spaced@127.0.0.1/spaced?options=-c%20statement_timeout%3D0",
            "must not set statement_timeout in its options",
        ),
    ],
)
def test_a_bad_url_is_refused_with_its_rule(flag: str, url: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings([flag, url])
    message = str(caught.value)
    assert message.startswith(f"{flag} (") and expected in message and repr(url) in message


def test_a_message_limit_over_redis_bulk_limit_is_refused_with_the_scale_out() -> None:
    over = str(512 * 1024 * 1024 + 1)
    with pytest.raises(SettingsError) as caught:
        load_settings([*SCALE_OUT, "--max-message-bytes", over])
    message = str(caught.value)
    assert "--max-message-bytes" in message and "--redis-url" in message
    assert "proto-max-bulk-len" in message and over in message
    assert load_settings([*SCALE_OUT, "--max-message-bytes", str(512 * 1024 * 1024)]).scale_out
    # One replica has no Redis: up to the flag's own maximum (1 GiB).
    assert load_settings(["--max-message-bytes", str(1024 * 1024 * 1024)]).max_message_bytes == 1024**3
