# The two commands a newcomer needs: `make demo` and `make test`. Contributors also run `make lint`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medsure-installed

.PHONY: demo test lint install clean bench-check docs

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

# Rerun the quick subset of every benchmark and compare with benchmarks/check_recorded.json: exact
# where the environment matches the record, within each number's stated tolerance where it does not
# (benchmarks/README.md). Non-zero exit on a mismatch. Needs ../shared/data; a few minutes on 1 thread.
bench-check: $(STAMP)
	$(BIN)/python -m benchmarks.check $(BENCH_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/: offline (no CDN, no web fonts), open
# site/index.html in a browser. --strict: a broken link or a missing page fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_output .pytest_cache .mypy_cache .ruff_cache
