"""Settings of the item_socket service: CLI flags and ITEM_SOCKET_* environment variables.

Every field is one CLI flag (``--max-message-bytes``) and one environment variable
(``ITEM_SOCKET_MAX_MESSAGE_BYTES``). A flag given on the command line wins over the variable.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ITEM_SOCKET_"
MIB = 1024 * 1024
# Redis' default proto-max-bulk-len: the largest argument (one stream entry's update) a command may
# carry. Over it Redis refuses the XADD, and with it the flush pipeline other documents share.
# Source: https://redis.io/docs/latest/operate/oss_and_stack/management/config-file/
REDIS_MAX_BULK_BYTES = 512 * MIB
# A query parameter both libpq and redis-py read as the password (they also take it from the URL).
_PASSWORD_PARAMETER = re.compile(r"(?i)(^|&)(password=)[^&]*")


class Settings(BaseSettings):
    """Validated configuration of one item_socket process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    host: str = Field("0.0.0.0", min_length=1, description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    data_dir: Path = Field(
        Path("data"), description="Directory of the SQLite document store (created if missing)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Minimum level of the JSON log lines written to stderr."
    )
    auth_secret_file: Path | None = Field(
        None,
        description="File holding the HS256 secret of the JWTs clients must present; "
        "no file = no authentication (every client may write every document).",
    )
    flush_interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between writes of received updates to the store."
    )
    unload_grace: float = Field(
        30.0, ge=0, le=86400, description="Seconds a document without clients stays in memory."
    )
    compact_after: int = Field(
        500, ge=1, le=1_000_000, description="Stored updates of a document that trigger compaction."
    )
    compact_max_age: float = Field(
        600.0,
        ge=1,
        le=86400,
        description="With --redis-url: seconds after which an open document's updates still only in its "
        "Redis stream are compacted into PostgreSQL (what its backups hold), however few they are.",
    )
    max_message_bytes: int = Field(
        32 * MIB,
        ge=64 * 1024,
        le=1024 * MIB,
        description="Largest message (WebSocket frame or long-polling body) a client may send; keep "
        "it above the largest document, which a first sync carries whole (at most 512 MiB with "
        "--redis-url: Redis' proto-max-bulk-len).",
    )
    rate_limit: float = Field(
        200.0, ge=0, description="Messages per second one connection may send on average (0 = no limit)."
    )
    rate_burst: int = Field(2000, ge=1, description="Messages one connection may send in a burst.")
    max_connections: int = Field(
        10000, ge=0, description="Open client connections accepted at once (0 = no limit)."
    )
    shutdown_grace: float = Field(
        10.0, gt=0, le=3600, description="Seconds from SIGTERM/SIGINT to process exit, at most."
    )
    ping_interval: float = Field(
        25.0, gt=0, le=600, description="Seconds between keepalive pings on idle connections."
    )
    redis_url: str | None = Field(
        None,
        description="Redis server of the scale-out (redis://host:port/db): every replica appends the "
        "updates it integrates to the document's Redis stream and follows the others'; needs "
        "--store-url. Unset = one replica, no Redis.",
    )
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password (a Docker secret); none = no AUTH."
    )
    store_url: str | None = Field(
        None,
        description="Shared document store (postgresql://user@host:port/db, no password in it); its "
        "parameters are kept, its options merged with the store's statement_timeout (which it must "
        "not set); unset = SQLite under --data-dir (one replica only).",
    )
    store_password_file: Path | None = Field(
        None, description="File holding the PostgreSQL password (a Docker secret)."
    )
    awareness_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds after which a presence state from another replica that was not renewed is "
        "removed (Yjs' outdatedTimeout; clients renew theirs every 15 s).",
    )
    cors_allowed_origins: str = Field(
        "*",
        description="Comma-separated origins allowed to open Socket.IO connections ('*' = any, "
        "'' = same origin only).",
    )

    @field_validator("host", "cors_allowed_origins")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        _refuse_password(value, "--redis-password-file")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// or postgres:// URL (unset = SQLite under --data-dir)")
        _refuse_password(value, "--store-password-file")
        options = " ".join(v for k, v in parse_qsl(urlsplit(value).query) if k == "options")
        if "statement_timeout" in options.lower():
            # The store's own statement_timeout bounds every operation (readiness, held edits).
            raise ValueError(
                "must not set statement_timeout in its options: item_socket sets it to the store's "
                "timeout (other options are kept)"
            )
        return value

    @model_validator(mode="after")
    def _scale_out_needs_a_shared_store(self) -> Settings:
        if self.redis_url is not None and self.store_url is None:
            raise ValueError(
                "--redis-url needs --store-url postgresql://... : replicas must share one store "
                "(SQLite under --data-dir belongs to one process)"
            )
        return self

    @model_validator(mode="after")
    def _scale_out_messages_fit_a_stream_entry(self) -> Settings:
        if self.redis_url is not None and self.max_message_bytes > REDIS_MAX_BULK_BYTES:
            raise ValueError(
                f"--max-message-bytes {self.max_message_bytes} is over {REDIS_MAX_BULK_BYTES} (512 MiB, "
                "Redis' default proto-max-bulk-len) with --redis-url: one such update would make Redis "
                "refuse the append of every document flushed with it; lower --max-message-bytes"
            )
        return self

    @property
    def scale_out(self) -> bool:
        """True when replicas share documents through Redis (``redis_url`` given)."""
        return self.redis_url is not None

    @field_validator("auth_secret_file", "redis_password_file", "store_password_file")
    @classmethod
    def _secret_file_readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError(f"{value} is not a readable file; create it with the secret")
        if not value.read_bytes().strip():
            raise ValueError(f"{value} is empty; write the secret into it")
        return value

    def allowed_origins(self) -> str | list[str] | None:
        """The value python-socketio expects for ``cors_allowed_origins``."""
        if self.cors_allowed_origins == "*":
            return "*"
        origins = [o.strip() for o in self.cors_allowed_origins.split(",") if o.strip()]
        return origins or None


_URL_FIELDS = ("redis_url", "store_url")


def _refuse_password(url: str, password_flag: str) -> None:
    """Raise ValueError naming ``password_flag`` if ``url`` carries a password (user info or query)."""
    parts = urlsplit(url)
    if parts.password is not None or _PASSWORD_PARAMETER.search(parts.query):
        raise ValueError(f"must not carry a password; put it in {password_flag}")


def redact(url: str) -> str:
    """``url`` with any password (user info or ``password=`` parameter) replaced by ``***``.

    For error messages and logs, which never echo a secret; ``<unparseable URL>`` if it is not one.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
        query = _PASSWORD_PARAMETER.sub(r"\1\2***", parts.query)
        return parts._replace(netloc=netloc, query=query).geturl()
    except ValueError:
        return "<unparseable URL>"


class SettingsError(Exception):
    """The configuration has one or more invalid values; the message has one line per value."""


def flag_name(field: str) -> str:
    """``max_message_bytes`` -> ``--max-message-bytes``."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """``max_message_bytes`` -> ``ITEM_SOCKET_MAX_MESSAGE_BYTES``."""
    return ENV_PREFIX + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """The CLI parser: one flag per Settings field, each defaulting to "not given"."""
    parser = argparse.ArgumentParser(
        prog="item-socket",
        description="Real-time Yjs document service (Socket.IO + y-websocket on one port).",
    )
    for name, field in Settings.model_fields.items():
        default = field.default
        parser.add_argument(
            flag_name(name),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [env {env_name(name)}, default {default}]",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse CLI flags (over ITEM_SOCKET_* variables) into Settings.

    Raises SettingsError with one line per invalid field, each naming the flag and the variable.
    """
    args = build_parser().parse_args(argv)
    given = {name: value for name, value in vars(args).items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across fields (model validator): its message names them
                lines.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            source = "flag" if field in given else "environment"
            value = given.get(field, error.get("input"))
            if field in _URL_FIELDS and isinstance(value, str):
                value = redact(value)
            lines.append(
                f"{flag_name(field)} ({env_name(field)}, from {source}): {error['msg']} (got {value!r})"
            )
        raise SettingsError("\n".join(lines)) from None
