"""Cutting a Yjs update into smaller valid updates (item_socket.ysplit), checked with pycrdt (yrs)."""

from __future__ import annotations

import base64
import json
import random
import subprocess

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from item_socket.ysplit import SplitError, split_update
from tests.item_socket.e2e.harness import JS_DIR, NODE


def _contents(doc: Doc) -> dict[str, object]:
    """Everything a document holds, comparable across docs."""
    return {
        "text": str(doc.get("text", type=Text)),
        "map": doc.get("map", type=Map).to_py(),
        "array": doc.get("array", type=Array).to_py(),
        "xml": str(doc.get("xml", type=XmlFragment)),
        "state": doc.get_state(),
    }


def _rebuilt(parts: list[bytes]) -> Doc:
    doc: Doc = Doc()
    for part in parts:
        doc.apply_update(part)
    return doc


def _busy_document() -> Doc:
    """Two clients, interleaved edits, deletions, every shared type and content kind.

    ASCII only at random positions: an index inside a multi-byte character breaks the document
    in yrs itself (its own full update no longer applies); non-ASCII text is tested apart.
    """
    doc: Doc = Doc()
    text = doc.get("text", type=Text)
    amap = doc.get("map", type=Map)
    array = doc.get("array", type=Array)
    xml = doc.get("xml", type=XmlFragment)
    other: Doc = Doc()
    rng = random.Random(7)
    for round_index in range(60):
        for _ in range(5):
            position = rng.randint(0, len(text))
            text.insert(position, rng.choice(["abc", "hello", "x" * 50]))
        if len(text) > 20:
            start = rng.randint(0, len(text) - 10)
            del text[start : start + rng.randint(1, 9)]
        amap[f"k{round_index}"] = {"n": round_index, "list": [1.5, None, True, "s" * 20], "big": 2**40}
        array.append(rng.choice([1, "two", 3.25, None, False, {"deep": [1, {"x": "y"}]}]))
        if round_index % 10 == 0:
            xml.children.append(XmlElement("p", {"class": "c"}, [XmlText(f"para {round_index}")]))
        # Another client's edits, merged in: two clients' runs in one update.
        other.apply_update(doc.get_update(other.get_state()))
        other.get("text", type=Text).insert(0, f"[{round_index}]")
        doc.apply_update(other.get_update(doc.get_state()))
    text.format(0, 5, {"bold": True})
    return doc


@pytest.mark.parametrize("budget", [64, 200, 1000, 4096])
def test_the_parts_of_a_busy_document_rebuild_it(budget: int) -> None:
    doc = _busy_document()
    update = doc.get_update()
    expected = _contents(doc)
    assert _contents(_rebuilt([update])) == expected  # the document itself is sound
    parts = split_update(update, budget)
    assert len(parts) > 1
    # In order with yrs (pycrdt 0.14 loses structs when several clients' parts arrive out of
    # order, even though re-applying them heals it: a yrs limitation, not one of the parts) ...
    assert _contents(_rebuilt(parts)) == expected
    # ... and in any order with npm Yjs, what the clients run.
    assert _npm_yjs_rebuilds(update, parts) == {
        order: {"same": True, "pending": False} for order in ("in", "reversed", "shuffled")
    }


def _npm_yjs_rebuilds(reference: bytes, parts: list[bytes]) -> dict[str, dict[str, bool]]:
    """Apply ``parts`` with npm Yjs in order, reversed and shuffled (js/apply_updates.mjs)."""
    payload = {
        "reference": base64.b64encode(reference).decode(),
        "parts": [base64.b64encode(p).decode() for p in parts],
    }
    result = subprocess.run(
        [NODE, str(JS_DIR / "apply_updates.mjs")],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS_DIR,
        check=True,
    )
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("alphabet", ["0123456789abcdef", "日本語😀é"])
def test_one_large_string_is_cut_into_parts_of_the_budget(alphabet: str) -> None:
    doc: Doc = Doc()
    doc.get("text", type=Text).insert(0, alphabet * 40_000)
    update = doc.get_update()
    budget = 16 * 1024
    parts = split_update(update, budget)
    assert len(parts) >= len(update) // budget
    assert all(len(part) <= budget + 64 for part in parts)
    assert _contents(_rebuilt(parts)) == _contents(doc)
    assert _contents(_rebuilt(parts[::-1])) == _contents(doc)


def test_a_budget_smaller_than_a_character_still_makes_progress() -> None:
    doc: Doc = Doc()
    doc.get("text", type=Text).insert(0, "😀é日" * 50)
    parts = split_update(doc.get_update(), 3)
    assert len(parts) > 50
    assert _contents(_rebuilt(parts)) == _contents(doc)


def test_a_diff_against_a_state_vector_is_split_too() -> None:
    doc: Doc = Doc()
    text = doc.get("text", type=Text)
    text.insert(0, "a" * 10_000)
    client: Doc = Doc()
    client.apply_update(doc.get_update())  # the client holds this state ...
    known = client.get_state()
    text.insert(5000, "b" * 10_000)  # ... and misses these edits
    del text[100:200]
    for part in split_update(doc.get_update(known), 1024):
        client.apply_update(part)
    assert _contents(client) == _contents(doc)


def test_a_small_update_is_returned_whole() -> None:
    doc: Doc = Doc()
    doc.get("text", type=Text).insert(0, "small")
    update = doc.get_update()
    assert split_update(update, 1024) == [update]


def test_bytes_that_are_no_update_raise_split_error() -> None:
    with pytest.raises(SplitError):
        split_update(b"\x05\x01\x02" + b"\xff" * 2000, 100)
