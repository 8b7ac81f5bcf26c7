# Two commands a fresh clone needs: `make run` (the main job, offline) and `make test`.
# Both create the environment on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PARAMS  ?= params/quick.yaml
SEEDS   ?=
# make test: pytest-xdist workers, one test file each at a time (--dist loadfile: a file's
# fixtures and its order stay in one process), the longest files first (tests/conftest.py,
# LONGEST_FIRST; --no-loadscope-reorder keeps that order); 2 = the cores of the machine CI runs on.
TEST_WORKERS ?= 2
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/inductor

.PHONY: setup run test test-fast browser readme lock clean-env

setup: $(STAMP)

# torch is installed on its own first: the CPU wheel 2.13.0 where it exists; elsewhere any
# torch>=2.4 already present (e.g. a CUDA build) is kept.
# The other packages at the versions the README's numbers and CI were measured with
# (constraints.txt, `make lock`), so a later release cannot change them; PIN=0, or a Python
# for which a pinned version has no wheel, installs the newest within pyproject's ranges.
PIN     ?= 1
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: the CPU torch where PyPI's default is CUDA
TORCH_INDEX ?=
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) || $(BIN)/pip install -q "torch>=2.4"
	$(if $(filter 1,$(PIN)),$(BIN)/pip install -q -c constraints.txt -e ".[test]" || \
	  { echo "make setup: the pinned versions (constraints.txt) did not install here; installing the newest within pyproject's ranges" >&2; \
	    $(BIN)/pip install -q -e ".[test]"; },$(BIN)/pip install -q -e ".[test]")
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# `make run SEEDS="0 1 2"`: the same grid over three seeds, as experiment quick-seeds (3302 s measured for
# its 15 runs, 2 workers, 2 cores, 2026-11-28; plain `make run`'s 5 runs took 1225 s).
run: $(STAMP)
	$(BIN)/eelib batch $(PARAMS) --out outputs --workers 2 $(if $(SEEDS),--seeds $(SEEDS) --set name=quick-seeds)

readme: $(STAMP)
	$(BIN)/python tools/update_readme.py $(if $(wildcard outputs/quick-seeds/results.jsonl),outputs/quick-seeds,outputs/quick) \
	    outputs/fig3b-offline-200k outputs/replay-dropout-offline-small outputs/lora-offline-small

test: $(STAMP)
	EELIB_OUTPUTS=$$(mktemp -d) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests notebooks --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not browser" $(PYTEST_ARGS)

# Debian chromium for the one real-browser test (issue 4); needs root/apt.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Rewrite constraints.txt from this environment (after upgrading a package on purpose); torch is
# left out: it is installed on its own (above), CPU or CUDA build.
lock: $(STAMP)
	{ echo "# Tested versions: what make setup installs besides torch (written by make lock)."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i -E '^(torch|eelib|pip|setuptools|wheel)=='; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean-env:
	rm -rf $(VENV)
