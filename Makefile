# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: env demo test lint report clean

# The CPU wheel of torch is installed first so that pip does not pull a multi-GB CUDA build;
# on a GPU machine set TORCH_SPEC="torch" to get the CUDA build instead.
TORCH_SPEC ?= torch==2.13.0

# pip byte-compiles the installed files one after the other; compiling them afterwards on all cores
# gives the same .pyc files (which every job's imports use where PYTHONDONTWRITEBYTECODE is set) sooner.
# compileall's status is ignored as pip ignores it: a few packages ship files that are not Python 3.
$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-compile -e ".[test,dev]"
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/snakemake --profile profiles/local --cores $(CORES)
	$(VENV)/bin/snakemake --profile profiles/local --report results/report.html

# `make test` runs the whole suite; TIER picks a part of it by the markers in pyproject.toml (what CI
# runs one after the other, .ci/run): fast (unit tests, a couple of minutes), workflow (real snakemake
# runs of the tiny demo), slurm (a real single-node SLURM).
TIER ?= all
MARKS_all :=
MARKS_fast := -m "not workflow and not slurm"
MARKS_workflow := -m "workflow and not slurm"
MARKS_slurm := -m slurm
test: env
	$(VENV)/bin/pytest -q $(MARKS_$(TIER))

# Static checks: Python style, the rules' formatting, and snakemake's own linter on the demo config.
lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check Snakefile rules
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(VENV)/bin/snakemake --lint --snakefile Snakefile --directory "$$tmp" --configfile config.yaml

clean:
	rm -rf results data resources .snakemake
