# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MUSIC_STAMP := $(VENV)/.installed-music
DEMO_DIR ?= runs/demo
# pip prints errors only (-qq): its warnings here are about the machine, not this project (a
# pip.conf index folder that lacks a package: "Location '...' is ignored"), and errors still
# print and stop make. `make PIP_QUIET=-q` (or empty) shows them again.
PIP_QUIET ?= -qq
PIP := $(PY) -m pip install $(PIP_QUIET)

.PHONY: venv demo test lint clean

venv: $(STAMP)

# torch is installed first and every later step is constrained to that exact version, so pip
# never swaps in a newer (CUDA, multi-GB) build to satisfy a loose requirement.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c constraints.txt torch==2.13.0
	$(PIP) -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The demo trains on the Bach chorales bundled with music21 (the `music` extra).
$(MUSIC_STAMP): $(STAMP)
	$(PIP) -c constraints.txt -e '.[music]'
	touch $(MUSIC_STAMP)

demo: $(MUSIC_STAMP)
	$(PY) -m seqvae.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check seqvae plugins tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info runs
