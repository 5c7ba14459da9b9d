# The two commands of the README. Each sets up .venv by itself the first time (and again
# whenever pyproject.toml changes), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test demo bench clean

run: $(STAMP)
	$(PY) run_wizard.py

test: $(STAMP)
	$(PY) -m pytest -q

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
