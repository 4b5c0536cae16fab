# prognosis-bench: `make demo` runs the main job, `make test` the test suite.
# Both create .venv and install everything they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install lock demo gbsg2 leaderboards test bench validate readme clean

install: $(VENV)/.installed

# The environment is exactly requirements/lock.txt (pip-tools, every file pinned by sha256, for Linux x86-64 and
# Python 3.11): the versions that made the committed pages. scripts/install-lock installs it with --no-deps and
# --require-hashes, sam2 last (it builds against the torch installed before it); then this repository, editable.
$(VENV)/.installed: requirements/lock.txt pyproject.toml tests/fixtures/bench_example_plugin/pyproject.toml \
		tests/fixtures/bench_suv_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PYTHON) scripts/install-lock $(BIN)/python requirements/lock.txt
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e . -e tests/fixtures/bench_example_plugin -e tests/fixtures/bench_suv_plugin
	touch $@

# Re-resolve the lock from pyproject.toml's ranges (every extra, the test tools and what sam2's build needs),
# then rebuild .venv from it: review the diff and regenerate the pages (make leaderboards) before committing both.
lock: $(VENV)/.installed
	CUSTOM_COMPILE_COMMAND="make lock" SAM2_BUILD_CUDA=0 $(BIN)/pip-compile --quiet --upgrade --all-extras \
		--generate-hashes --allow-unsafe --no-build-isolation --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements/lock.txt pyproject.toml
	rm -rf $(VENV)
	$(MAKE) install

# The main job: the study's protocol reduced to a few minutes of CPU (configs/demo.yaml) on the
# built-in synthetic cohort, built on first use; every row tracked in ./mlflow.db, and the
# leaderboard regenerated into leaderboards/synthetic_mm.md (+ .json) and printed.
demo: install
	$(BIN)/bench grid --config configs/demo.yaml
	@echo
	@echo "Browse every run in the MLflow UI:  $(BIN)/bench ui"

# Every built-in learner on the clinical covariates of GBSG2, each compared with the Cox model on the same
# bootstrap replicates: the results file leaderboards/gbsg2.json, then the page rendered from it. The learners
# are named, not `all`: that would take in any plugin package installed beside (the test fixtures' too).
GBSG2_BASELINE := --baseline clinical --baseline-model coxph
GBSG2_MODELS := coxph coxnet rsf gbsa deepsurv
gbsg2: install
	$(BIN)/bench run --dataset gbsg2 --extractor clinical --model $(GBSG2_MODELS) --bootstrap 1000 --seed 0 $(GBSG2_BASELINE) \
		--results leaderboards/gbsg2.json
	$(BIN)/bench leaderboard --dataset gbsg2

# Every committed page, regenerated from the command its results file records (the same script CI runs),
# then checked against its results file.
leaderboards: install
	scripts/regenerate-leaderboards --bench $(BIN)/bench leaderboards

# Tests run in up to 4 processes (pytest-xdist, one per core on a smaller machine), a test file per process.
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

bench: install
	$(BIN)/python -m pytest tests/benchmarks -o addopts="-ra"

# The simulation study behind docs/statistics.md (about 6 minutes on 2 cores, two thirds of it calibration).
validate: install
	$(BIN)/bench validate-statistics --out docs/statistics.md

# The README's option tables, generated from the plugins' config classes.
readme: install
	$(BIN)/python -m bench.plugins.docs README.md

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks mlflow.db mlartifacts mlruns
