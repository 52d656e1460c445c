"""Optional JWT (HS256) authorization: claim ``docs`` maps glob patterns to "read" or "write"."""

from __future__ import annotations

import enum
import fnmatch
from pathlib import Path

import jwt


class Access(enum.IntEnum):
    """What a connection may do with one document."""

    NONE = 0
    READ = 1
    WRITE = 2


class Unauthorized(Exception):
    """The connection is refused; the message says why (logged, and sent to y-websocket clients)."""


class Authorizer:
    """Decides the access of a token to a document. Without a secret, everyone may write."""

    def __init__(self, secret: bytes | None) -> None:
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path | None) -> Authorizer:
        """Read the HS256 secret from ``path`` (surrounding whitespace stripped); None disables auth."""
        return cls(path.read_bytes().strip() if path is not None else None)

    @property
    def enabled(self) -> bool:
        """True when tokens are required."""
        return self._secret is not None

    def access(self, token: str | None, document: str) -> Access:
        """The access ``token`` grants to ``document``; raises Unauthorized when it grants none."""
        if self._secret is None:
            return Access.WRITE
        if not token:
            raise Unauthorized("missing token")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["docs"]})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        docs = claims["docs"]
        if not isinstance(docs, dict):
            raise Unauthorized("invalid token: claim 'docs' must map glob patterns to 'read' or 'write'")
        granted = Access.NONE
        for pattern, level in docs.items():
            if isinstance(pattern, str) and fnmatch.fnmatchcase(document, pattern):
                if level == "write":
                    granted = Access.WRITE
                elif level == "read":
                    granted = max(granted, Access.READ)
        if granted is Access.NONE:
            raise Unauthorized(f"token grants no access to document {document!r}")
        return granted
