# The two commands of the README. Both work on a fresh Debian machine as root.
.PHONY: up down test deps services lint

up: deps services
	.venv/bin/spaced up local

down:
	.venv/bin/spaced down local

test: deps services
	.venv/bin/ruff check .
	.venv/bin/pytest

deps:
	bash scripts/install-deps.sh

services:
	bash scripts/start-services.sh

lint:
	.venv/bin/ruff check .
