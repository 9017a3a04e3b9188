# Every target that needs Python runs `setup` first, so on a fresh machine one command is enough.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast lint verify bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) -m liverseg_monai demo --out demo_out

test: setup
	$(PY) -m pytest -q -ra --durations=15

test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow"

lint: setup
	$(PY) -m ruff check liverseg_monai tests bundles auto3dseg

verify: setup
	$(PY) -m pytest -q -ra tests/bundles -k "metadata or net_in_out or export"

bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m liverseg_monai bench --out bench

clean:
	rm -rf demo_out bench/tmp .pytest_cache
