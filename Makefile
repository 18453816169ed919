# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make demo   -- virtual environment, install, embedded stack, import + export a generated dataset
#   make test   -- the same set-up, then ruff, mypy and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo web test lint typecheck unit integration infra bench clean

# hatch_build.py compiles the optional C block cut at install: a change to either installs again
$(STAMP): pyproject.toml hatch_build.py src/sluiceway/_blockcut.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sluiceway needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,infra]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP) web
	$(BIN)/sluiceway demo

test: $(STAMP) lint typecheck web
	$(BIN)/python -m pytest

# The browser upload page (web/dist, served at /app/ by `sluiceway up`): npm packages pinned in
# web/package-lock.json. Without npm it is skipped, and so are the browser tests (they say why).
web:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory web/dist/index.html; \
	else echo "make web: npm not found; the upload page is not built and its browser tests will skip"; fi

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/dist/index.html: web/node_modules/.installed web/build.mjs web/index.html $(wildcard web/src/*)
	cd web && npm run --silent build

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

infra: $(STAMP)
	$(BIN)/python -m pytest tests/infra

bench: $(STAMP)
	$(BIN)/python bench/import_vs_copy.py

clean:
	rm -rf $(VENV) .sluiceway cdk.out layers/build .mypy_cache .ruff_cache .pytest_cache
