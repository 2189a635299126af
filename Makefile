# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MUSIC_STAMP := $(VENV)/.installed-music
DEMO_DIR ?= runs/demo

.PHONY: venv demo test lint clean

venv: $(STAMP)

# torch is installed first and every later step is constrained to that exact version, so pip
# never swaps in a newer (CUDA, multi-GB) build to satisfy a loose requirement.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The demo trains on the Bach chorales bundled with music21 (the `music` extra).
$(MUSIC_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[music]'
	touch $(MUSIC_STAMP)

demo: $(MUSIC_STAMP)
	$(PY) -m seqvae.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check seqvae plugins tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info runs
