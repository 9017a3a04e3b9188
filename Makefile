# Every target that needs Python runs `setup` first, so on a fresh machine one command is enough.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast lint verify bench bench-deps bench-quality bench-peer bench-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) -m tools demo --out demo_out

# two pytest workers, one thread each, a test file per worker at a time (module fixtures are built once):
# on 2 cores the suite's learning tests run side by side instead of one after another
TEST_WORKERS ?= 2
test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile --durations=25

test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow"

lint: setup
	$(PY) -m ruff check liverseg_monai tests bundles auto3dseg tools

verify: setup
	$(PY) -m pytest -q -ra tests/bundles -k "metadata or net_in_out or export"

# speed and memory (about 15 min on 2 CPU cores); results merge into bench/results.json by machine
BENCH_THREADS ?= 2
bench-deps: setup
	$(PY) -c "import segmentation_models_pytorch" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"

bench: bench-deps
	OMP_NUM_THREADS=$(BENCH_THREADS) MKL_NUM_THREADS=$(BENCH_THREADS) $(PY) -m tools bench --out bench

# quality on held-out synthetic data: every paper's claim through the bundles with seeds and bootstrap intervals
# (tools/bench/claims.py; docs/claims.md) and the PathSegDiff feature ablation; ONLY=claim:NAME (comma-separated)
# runs claims one at a time, ONLY=claims all of them
ONLY ?= claims,pathsegdiff_features
bench-quality: bench-deps
	OMP_NUM_THREADS=$(BENCH_THREADS) MKL_NUM_THREADS=$(BENCH_THREADS) $(PY) -m tools bench --out bench --only $(ONLY)

# nnU-Net v2 beside the CT bundles: the bundle's claim first (its training wall clock on this machine), then
# nnU-Net for that time on the same data; PEER=claim:two_stage_vs_one_network,peer:nnunet_tumour for the tumour
PEER ?= claim:liver_ct_quality,peer:nnunet_liver
bench-peer: bench-deps
	$(PY) -c "import nnunetv2" 2>/dev/null || $(PY) -m pip install -q -e ".[peer]"
	OMP_NUM_THREADS=$(BENCH_THREADS) MKL_NUM_THREADS=$(BENCH_THREADS) $(PY) -m tools bench --out bench --only $(PEER)

# the speed scenarios on a GPU (AMP, channels-last), added as rows of their own
bench-gpu: bench-deps
	$(PY) -m tools bench --out bench --device cuda

clean:
	rm -rf demo_out bench/tmp .pytest_cache
