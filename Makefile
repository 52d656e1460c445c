# The two commands of the README. Both work on a fresh Debian machine as root.
.PHONY: up down test deps services lint lock upgrade bench

up: deps services
	.venv/bin/spaced up local

down:
	.venv/bin/spaced down local

test: deps services
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest

deps:
	bash scripts/install-deps.sh

services:
	bash scripts/start-services.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# Python dependencies: requirements/*.lock (pinned, hashed) are what every install uses.
lock:     # after editing pyproject.toml: resolve again, keeping the pins that still fit
	bash scripts/lock.sh

upgrade:  # every Python dependency to its newest allowed version; then `make test`
	bash scripts/lock.sh --upgrade

# The published benchmark (about 15 min on 2 cores): writes docs/benchmarks.md and its plot.
bench: deps
	.venv/bin/python -m benchmarks.run --all --redis
