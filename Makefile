# The commands README.md shows. Everything installs from uv.lock into .venv.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: install check-servers run test lint typecheck bench docs

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	# Compiled once here: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every service process would
	# otherwise compile its dependencies again at each start, seconds of CPU each.
	$(UV) sync --frozen --all-packages --compile-bytecode

check-servers: install
	$(RUN) spm-admin check

run: install
	$(RUN) spm-admin run

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

# mypy --strict and more over libs/, every service's src/ and bench/ (the list and the settings are in
# pyproject.toml's [tool.mypy]). Incremental: ~2 s once .mypy_cache holds the last run.
typecheck: install
	$(RUN) mypy

test: check-servers lint typecheck
	$(RUN) pytest $(PYTEST_ARGS)

docs: install
	$(RUN) spm-admin docs

bench: install
	$(RUN) python -m bench
