# prognosis-bench: `make demo` runs the main job, `make test` the test suite.
# Both create .venv and install everything they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install demo gbsg2 leaderboards test bench validate readme clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tests/fixtures/bench_example_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) setuptools wheel
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[test,radiomics,deep,timm]' -e tests/fixtures/bench_example_plugin
	# sam2 compiles nothing on a CPU-only machine and must build against the torch installed above.
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install $(PIP_FLAGS) --no-build-isolation 'sam2==1.1.0'
	touch $@

# The main job: the study's protocol reduced to a few minutes of CPU (configs/demo.yaml) on the
# built-in synthetic cohort, built on first use; every row tracked in ./mlflow.db, and the
# leaderboard regenerated into leaderboards/synthetic_mm.md (+ .json) and printed.
demo: install
	$(BIN)/bench grid --config configs/demo.yaml
	@echo
	@echo "Browse every run in the MLflow UI:  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

# Every learner on the clinical covariates of GBSG2, each compared with the Cox model on the same
# bootstrap replicates: the results file leaderboards/gbsg2.json, then the page rendered from it.
GBSG2_BASELINE := --baseline clinical --baseline-model coxph
gbsg2: install
	$(BIN)/bench run --dataset gbsg2 --extractor clinical --model all --bootstrap 1000 --seed 0 $(GBSG2_BASELINE) \
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

# The simulation study behind docs/statistics.md (a few minutes).
validate: install
	$(BIN)/bench validate-statistics --out docs/statistics.md

# The README's option tables, generated from the plugins' config classes.
readme: install
	$(BIN)/python -m bench.plugins.docs README.md

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks mlflow.db mlartifacts mlruns
