# The two commands a newcomer needs: `make demo` and `make test`. Contributors also run `make lint`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medsure-installed

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependencies or the version change (the installed metadata must carry the
# version in src/medsure/__init__.py; tests/test_packaging.py checks that they agree).
$(STAMP): $(BIN)/python pyproject.toml src/medsure/__init__.py
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medsure demo --out demo_output

test: $(STAMP)
	MEDSURE_NO_PROGRESS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint, format check and type check, configured in pyproject.toml ([tool.ruff], [tool.mypy]).
# All three always run, so one call shows every finding; the target fails if any of them fails.
lint: $(STAMP)
	@status=0; \
	echo "ruff check src tests"; $(BIN)/ruff check src tests || status=1; \
	echo "ruff format --check src tests"; $(BIN)/ruff format --check src tests || status=1; \
	echo "mypy src"; $(BIN)/mypy src || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) demo_output .pytest_cache .mypy_cache .ruff_cache
