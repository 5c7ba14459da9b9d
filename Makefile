# The two commands of the README. Each sets up .venv by itself the first time (and again
# whenever pyproject.toml changes), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test demo bench clean

run: $(STAMP)
	$(PY) run_wizard.py

# one worker per core; a file's tests stay on one worker (module fixtures are built once, and the
# multi-process tests' fixed ports never meet); files in collection order, where tests/conftest.py
# puts the slowest first (xdist's default order, by test count, would start them last)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

demo: $(STAMP)
	$(PY) run_wizard.py demo

bench: $(STAMP)
	$(PY) -m bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
