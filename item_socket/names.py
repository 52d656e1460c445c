"""Document names accepted by both protocols."""

from __future__ import annotations

MAX_NAME_LENGTH = 512


def document_name_error(name: str) -> str | None:
    """Why ``name`` cannot name a document, or None when it can."""
    if not name:
        return "document name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"document name is longer than {MAX_NAME_LENGTH} characters"
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        return "document name contains control characters"
    return None
