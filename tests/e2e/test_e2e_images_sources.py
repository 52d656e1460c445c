"""Reading this machine's Debian mirror from apt's sources (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.images import (
    AptSource,
    ImageBuildError,
    debian_mirror,
    debian_sources,
    inputs_hash,
    parse_apt_sources,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
"""


def write_apt_dir(root: Path, sources_list: str = "", deb822: str = "", extra_list: str = "") -> Path:
    """An /etc/apt look-alike."""
    (root / "sources.list.d").mkdir(parents=True)
    (root / "sources.list").write_text(sources_list)
    if deb822:
        (root / "sources.list.d" / "debian.sources").write_text(deb822)
    if extra_list:
        (root / "sources.list.d" / "other.list").write_text(extra_list)
    return root


def test_deb822_sources_give_the_bookworm_suites_on_main_only(tmp_path: Path) -> None:
    apt = write_apt_dir(tmp_path, deb822=DEB822)
    sources = debian_sources(apt)
    assert sources == [
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",)),
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
    ]
    assert debian_mirror(sources) == "http://mirror.example/debian"


def test_one_line_sources_and_foreign_repositories(tmp_path: Path) -> None:
    apt = write_apt_dir(
        tmp_path,
        sources_list="# comment\ndeb [arch=amd64] http://deb.example/debian bookworm main\n",
        extra_list="deb https://packages.cloud.example/apt cloud-sdk-bookworm main\n",
    )
    sources = debian_sources(apt)
    assert [s.uri for s in sources] == ["http://deb.example/debian"]
    assert sources[0].sources_list_line("bookworm") == "deb http://deb.example/debian bookworm main"


def test_disabled_files_are_ignored_and_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    apt = write_apt_dir(tmp_path)
    (apt / "sources.list.d" / "debian.sources.disabled").write_text(DEB822)
    sources = debian_sources(apt)
    assert sources == []
    with pytest.raises(ImageBuildError, match="SPACED_DEBIAN_MIRROR"):
        debian_mirror(sources)


def test_mirror_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACED_DEBIAN_MIRROR", "http://override.example/debian")
    assert debian_mirror([]) == "http://override.example/debian"


def test_parse_deb822_skips_disabled_stanzas() -> None:
    text = "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n"
    assert parse_apt_sources(text, deb822=True) == []


def test_inputs_hash_separates_parts() -> None:
    assert inputs_hash([("a", b"bc")]) != inputs_hash([("ab", b"c")])
    assert inputs_hash([("a", b"x"), ("b", b"y")]) != inputs_hash([("a", b"xb"), ("", b"y")])
    assert len(inputs_hash([("a", b"")])) == 12
