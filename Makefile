# Targets mirror CI. Every target creates the virtualenv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := consolidator tools tests

.PHONY: demo test lint fmt bench clean venv deb

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/consolidator demo --duration $${DURATION:-20}

test: lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

bench: $(STAMP)
	$(BIN)/python -m tools.bench.ring

# dist/consolidator_<version>_amd64.deb, checked by lintian (needs the Debian packages that
# .ci/run installs: dh-virtualenv, debhelper, lintian, help2man, ...).
deb:
	packaging/build-deb dist

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
