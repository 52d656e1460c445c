"""WireGuard keys: derivation checked against the real `wg pubkey`, and the key resource's provider."""

from __future__ import annotations

import base64
import subprocess

import pytest

from infra.components.mesh import WireGuardKeyProvider
from infra.plans.mesh import MeshError, generate_private_key, public_key_from_private


def wg(*args: str, stdin: str = "") -> str:
    return subprocess.run(
        ["wg", *args], input=stdin, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def test_public_key_matches_wg_pubkey_for_keys_from_wg_genkey() -> None:
    for _ in range(5):
        private_key = wg("genkey")
        assert public_key_from_private(private_key) == wg("pubkey", stdin=private_key + "\n")


def test_generated_keys_are_clamped_like_wg_genkey_and_accepted_by_wg() -> None:
    keys = {generate_private_key() for _ in range(20)}
    assert len(keys) == 20
    for private_key in list(keys)[:5]:
        raw = base64.b64decode(private_key)
        assert len(raw) == 32
        assert raw[0] & 7 == 0 and raw[31] & 128 == 0 and raw[31] & 64 == 64
        assert public_key_from_private(private_key) == wg("pubkey", stdin=private_key + "\n")


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"x" * 31).decode(), "QUJD"])
def test_a_malformed_private_key_is_refused(bad: str) -> None:
    with pytest.raises(MeshError, match="private key is not a WireGuard key"):
        public_key_from_private(bad)


def test_provider_creates_a_fresh_matching_pair_with_the_public_key_as_id() -> None:
    provider = WireGuardKeyProvider()
    first = provider.create({"rotation": ""})
    second = provider.create({"rotation": ""})
    assert first.outs["private_key"] != second.outs["private_key"]
    assert first.id == first.outs["public_key"] == wg("pubkey", stdin=first.outs["private_key"] + "\n")
    assert first.outs["private_key"] not in first.id


def test_provider_keeps_the_key_across_ups_and_replaces_it_only_on_rotation() -> None:
    provider = WireGuardKeyProvider()
    created = provider.create({"rotation": ""})
    state = dict(created.outs)
    inputs = {"rotation": "", "private_key": None, "public_key": None}
    unchanged = provider.diff(created.id, state, inputs)
    assert not unchanged.changes and not unchanged.replaces
    rotated = provider.diff(created.id, state, {**inputs, "rotation": "2025-06"})
    assert rotated.changes and rotated.replaces == ["rotation"]
    refreshed = provider.read(created.id, state)
    assert refreshed.id == created.id and refreshed.outs == state
