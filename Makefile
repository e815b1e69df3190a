# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: env demo test lint report clean

# The CPU wheel of torch is installed first so that pip does not pull a multi-GB CUDA build;
# on a GPU machine set TORCH_SPEC="torch" to get the CUDA build instead.
TORCH_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/snakemake --profile profiles/local --cores $(CORES)
	$(VENV)/bin/snakemake --profile profiles/local --report results/report.html

test: env
	$(VENV)/bin/pytest -q

lint: env
	$(VENV)/bin/ruff check .

clean:
	rm -rf results data resources .snakemake
