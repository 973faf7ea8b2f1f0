# `make demo` and `make test` set themselves up on a fresh machine (creates .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUTPUTS ?= outputs

.PHONY: setup browser cluster demo test test-fast lint bench bench-gpu leaderboard transfer rehearse clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The report test renders report.html in headless Chromium (Debian's package; root or sudo to install).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  sudo_cmd=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo_cmd apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo_cmd apt-get install -y -q chromium; }

# The SLURM and Ray launchers. hydra-ray-launcher pins cloudpickle<3, which breaks the joblib launcher
# (it needs >= 3); Ray runs with 3 (tests/test_sweep.py), so it is put back.
cluster: setup
	$(PY) -m pip install --quiet -e ".[cluster]"
	$(PY) -m pip install --quiet "cloudpickle>=3"

demo: setup  # the main job: a detector and its refined map, side by side
	$(PY) train.py refiner=ard curriculum=pgt

test: setup browser  # everything, the subprocess acceptance runs included (CI)
	$(PY) -m pytest

test-fast: setup  # without the tests marked slow (train.py in a subprocess)
	$(PY) -m pytest -m "not slow"

leaderboard: setup  # LEADERBOARD.{md,csv,tex} from every run under $(OUTPUTS)
	$(VENV)/bin/anorefine leaderboard $(OUTPUTS)

$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.bench-installed  # rewrites docs/benchmarks.md (ARGS=--quick for a fast subset)
	$(VENV)/bin/anorefine bench $(ARGS)

bench-gpu: $(VENV)/.bench-installed  # on a GPU machine: rewrites the GPU section of docs/benchmarks.md
	$(VENV)/bin/anorefine bench --gpu $(ARGS)

transfer: setup  # the leave-one-kind-out transfer matrix; rewrites the table of docs/transfer.md (ARGS: overrides)
	$(PY) scripts/transfer.py $(if $(ARGS),-- $(ARGS))

rehearse: setup  # the paper commands on stand-ins with random weights: cost per stage and per table (ARGS=--quick)
	$(PY) scripts/rehearse.py $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
