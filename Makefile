# ocrlib — the Makefile is the entry point. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= quick
SEED ?= 0
SOAK_MIN ?= 0
TEX_PACKAGES := texlive-latex-base dvipng preview-latex-style texlive-fonts-recommended
BROWSER_PACKAGES := chromium chromium-driver

.PHONY: help setup tex browser test test-fast reports data lab bench models serve load clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[notebooks,dev,screens,serve]'
	$(VENV)/bin/nbdime config-git --enable >/dev/null
	touch $(STAMP)

setup: $(STAMP) tex browser ## create .venv with the pinned packages, enable nbdime for notebooks, install TeX and Chromium when possible

tex: ## install real TeX (latex + dvipng) with apt-get when available; otherwise say mathtext is used
	@if command -v latex >/dev/null && command -v dvipng >/dev/null && kpsewhich preview.sty >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing real TeX: $(TEX_PACKAGES)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES) >/dev/null) \
		|| echo "warning: apt-get could not install TeX; the TeX-typeset test set falls back to mathtext"; \
	else echo "note: real TeX is not installed and apt-get is not usable here; the TeX-typeset test set falls back to mathtext"; fi

browser: ## install Chromium + chromedriver with apt-get when available (KaTeX screen captures); otherwise say the screen set is skipped
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing a headless browser: $(BROWSER_PACKAGES)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null) \
		|| echo "warning: apt-get could not install Chromium; the screen-capture test set is skipped"; \
	else echo "note: Chromium is not installed and apt-get is not usable here; the screen-capture test set is skipped"; fi

test: setup ## run every test (real data from ../shared/data when present)
	$(PY) -m pytest

test-fast: setup ## the tests without those marked slow (notebook runs, multi-process training)
	$(PY) -m pytest -m "not slow"

reports: setup ## run every numbered notebook with papermill into reports/ (PROFILE=smoke|quick|full, SEED=0)
	$(PY) -m ocrlib report --profile $(PROFILE) --seed $(SEED)

data: setup ## build the data sets of a profile into data/ (PROFILE=smoke|quick|full)
	$(PY) -c "from ocrlib.data.build import build_datasets; build_datasets('$(PROFILE)', seed=$(SEED))"

serve: setup ## the HTTP API (POST /predict) and the paste-a-screenshot page on http://127.0.0.1:8000/
	$(PY) -m ocrlib serve

load: setup ## concurrent clients against ocrlib serve: reports/load.json and load.md (SOAK_MIN=20 adds a soak)
	$(PY) -m ocrlib load --soak-min $(SOAK_MIN)

bench: setup ## benchmarks: reports/bench.json and reports/bench.md
	$(PY) -m ocrlib bench

models: setup ## table of the five recognisers and their parameter counts
	$(PY) -m ocrlib models

lab: setup ## JupyterLab on the repository
	$(VENV)/bin/jupyter lab --notebook-dir=.

clean: ## remove generated reports and caches (keeps data/ and runs/)
	find reports -mindepth 1 ! -name README.md -delete
	find . -name __pycache__ -prune -exec rm -rf {} +
