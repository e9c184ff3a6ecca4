# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Both create or reuse a local virtualenv and install the core plus every plugin in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.mtlkit-installed

.PHONY: install demo demo-synthetic test test-all lint docs bench clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev,plot,examples,docs]" $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtlkit train configs/demo.yaml --overwrite

demo-synthetic: $(STAMP)
	$(VENV)/bin/mtlkit train configs/synthetic.yaml --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf runs .pytest_cache
