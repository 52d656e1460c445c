#!/usr/bin/env python3
"""Writes the Docker build context of the item_socket image: item_socket/Dockerfile plus a wheels/
directory (the project wheel and its pinned dependencies), the same inputs `scripts/build-images.sh`
uses locally. The image workflow builds it with docker/build-push-action; a person runs the same:

    .venv/bin/python scripts/ci/item-socket-context.py build/item_socket-context
    docker build --build-arg BASE_IMAGE=debian:bookworm-slim -t item_socket:try build/item_socket-context

The wheels fit the image's Python (Debian bookworm's CPython 3.11): run this with a Python 3.11 that has
the project installed (`pip install -e .`), so the pins are the versions the tests ran against.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.images import REPO_ROOT, build_wheels, item_socket_requirements


def write_context(context: Path, cache_dir: Path) -> list[str]:
    """Dockerfile + wheels/ in `context` (emptied first); returns the pinned requirements."""
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("ERROR (WrongPython): run this with Python 3.11, the image's Python minor version")
    requirements = [*item_socket_requirements(), f"pip=={importlib.metadata.version('pip')}"]
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "item_socket" / "Dockerfile", context / "Dockerfile")
    build_wheels(context / "wheels", requirements, cache_dir)
    return requirements


def main(argv: list[str]) -> int:
    """`item-socket-context.py DIR [CACHE_DIR]`."""
    if len(argv) not in (1, 2):
        print("usage: item-socket-context.py DIR [WHEEL_CACHE_DIR]", file=sys.stderr)
        return 2
    context = Path(argv[0])
    with tempfile.TemporaryDirectory(prefix="spaced-wheel-cache-") as scratch:
        requirements = write_context(context, Path(argv[1]) if len(argv) == 2 else Path(scratch))
    wheels = sorted(p.name for p in (context / "wheels").glob("*.whl"))
    print(f"wrote {context}/Dockerfile and {len(wheels)} wheels for: {', '.join(requirements)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
