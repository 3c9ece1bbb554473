# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv with the project installed the first time they run: `make demo` installs
# only the library, its plotting and the digits fallback; `make test` adds the dev extra (test,
# notebook and cluster tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-dev

# A copy of CIFAR-10 beside the project (as on the team's machines) is used when present;
# otherwise the loader looks in $SPECNORM_DATA, then ~/.cache/specnorm_np, then downloads.
ifneq ($(wildcard ../shared/data/cifar-10-batches-py),)
export SPECNORM_DATA ?= $(abspath ../shared/data)
endif

.PHONY: demo test lint bench clean docs exercises

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[digits]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -e ".[dev,digits]"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/python -m specnorm_np demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

lint: $(TEST_STAMP)
	$(BIN)/ruff check specnorm_np tests

bench: $(STAMP)
	$(BIN)/python -m pip install "torch==2.13.0" psutil
	$(BIN)/python -m specnorm_np.bench

# The book: notebooks executed (cached per setting; quick unless NB_QUICK=0) and the API
# reference, warnings are errors. Open docs/_build/html/index.html afterwards.
NB_QUICK ?= 1
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[dev,digits,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	env -u MPLBACKEND PATH="$(abspath $(BIN)):$$PATH" SPECNORM_NB_QUICK=$(NB_QUICK) \
	  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  $(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "The book: docs/_build/html/index.html"

exercises: $(STAMP)
	$(BIN)/python docs/make_exercises.py --out build/exercises

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
