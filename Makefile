# Two commands for a fresh clone (see README):
#   make demo   - set up .venv and run the main job on the embedded default
#   make test   - set up .venv and run the test suite (what .ci/run calls)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.flowclas-installed

.PHONY: setup demo test test-all clean

setup: $(STAMP)

# torch==2.13.0 first: on this CPU machine pip takes the local CPU build; the extras' torch range is
# then already satisfied, so no multi-GB CUDA build is pulled in.
$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[runtime,model,backbones,ros,sim,eval,cluster,dev]'
	touch $@

demo: setup
	$(VENV)/bin/flowclas-ros demo

# The import contracts (setup.cfg [importlinter]) first: the layering is part of the test suite.
test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" test

test-all: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q test

clean:
	rm -rf .cache demo_out runs build *.egg-info
