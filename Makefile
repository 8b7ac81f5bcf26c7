# Two commands a fresh clone needs: `make run` (the main job, offline) and `make test`.
# Both create the environment on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PARAMS  ?= params/quick.yaml
SEEDS   ?=
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/inductor

.PHONY: setup run test test-fast browser readme clean-env

setup: $(STAMP)

# torch is installed on its own first: the CPU wheel 2.13.0 where it exists; elsewhere any
# torch>=2.4 already present (e.g. a CUDA build) is kept.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q "torch>=2.4"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# `make run SEEDS="0 1 2"`: the same grid over three seeds, as experiment quick-seeds (~25 min).
run: $(STAMP)
	$(BIN)/eelib batch $(PARAMS) --workers 2 $(if $(SEEDS),--seeds $(SEEDS) --set name=quick-seeds)

readme: $(STAMP)
	$(BIN)/python tools/update_readme.py $(if $(wildcard outputs/quick-seeds/results.jsonl),outputs/quick-seeds,outputs/quick) \
	    outputs/fig3b-offline-200k outputs/replay-dropout-offline-small outputs/lora-offline-small

test: $(STAMP)
	EELIB_OUTPUTS=$$(mktemp -d) $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not browser" $(PYTEST_ARGS)

# Debian chromium for the one real-browser test (issue 4); needs root/apt.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

clean-env:
	rm -rf $(VENV)
