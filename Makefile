# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch. With a GPU, install your own torch into .venv first (see README);
# pip then keeps it, since it satisfies the project's range.
TORCH ?= torch==2.13.0

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/python -m rodin.triplane.kernel --build || echo "note: fast CPU kernel not built; using the pure-PyTorch path"
	touch $(STAMP)

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check rodin tests

demo: setup
	$(BIN)/rodin demo --batch --out demo_out

# The fast benchmarks, each recording benchmarks/results/NAME.json, then BENCHMARKS.md rewritten from the
# records and benchmarks/template.md. The slow ones (render-meshes, paper, evaluations) keep their records.
bench: setup
	$(BIN)/rodin bench synth
	$(BIN)/rodin bench decode
	$(BIN)/rodin bench fit
	$(BIN)/rodin bench unet
	$(BIN)/rodin bench generate
	$(BIN)/rodin bench report

clean:
	rm -rf $(VENV) demo_out .pytest_cache
