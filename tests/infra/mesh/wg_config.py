"""A small reader of WireGuard configs for the tests (they repeat [Peer], which configparser refuses)."""

from __future__ import annotations


def parse_wireguard_config(text: str) -> list[tuple[str, dict[str, str]]]:
    """Sections in order as (name, {key: value}); comments and blank lines dropped."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], {}))
            continue
        key, _, value = line.partition("=")
        assert sections, f"key outside a section: {raw!r}"
        assert key.strip() not in sections[-1][1], f"key repeated in one section: {raw!r}"
        sections[-1][1][key.strip()] = value.strip()
    return sections
