# Set-up happens on first use: a virtual environment in .venv with torch and usema installed.
# TORCH pins the PyTorch build; any torch>=2.4 works (e.g. `make test TORCH=torch`).
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.usema-installed

.PHONY: demo test test-fast lint docs bench-attention clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,export,baselines,nnunet,docs]"
	@# nnU-Net and its UNets, whose other requirements are the nnunet extra: --no-deps because
	@# dynamic-network-architectures also lists timm (for architectures we do not use), whose torchvision
	@# requirement would replace the installed torch with another build.
	$(PY) -m pip install --quiet --no-deps "dynamic-network-architectures>=0.4.4,<0.5" "nnunetv2>=2.8.1,<2.9"
	@# -tr nnUNetTrainerUSEMA: nnU-Net's trainer search finds a module at the top of its trainer folder before
	@# it imports its Primus trainers, which need timm (left out above); see docs/nnunet.md.
	$(VENV)/bin/usema nnunet-install-trainer
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/usema demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(MAKE) docs
	$(PY) -m pytest -q -n 2 --dist loadfile

# The inner loop: everything but the long end-to-end tests (marked slow).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

# The documentation site, from docs/ and the docstrings; --strict fails on any warning (a broken link, a bad
# docstring). NO_MKDOCS_2_WARNING quiets the Material theme's notice about its successor.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

bench-attention: $(STAMP)
	$(VENV)/bin/usema bench attention -o benchmarks/attention

clean-venv:
	rm -rf $(VENV)
