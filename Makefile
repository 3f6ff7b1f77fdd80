# arctax: the two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU installs use the torch 2.13.0 CPU wheel; on a GPU site set TORCH_SPEC to your CUDA build.
TORCH_SPEC ?= torch==2.13.0
CORES ?= $(shell nproc)
DEMO_CONFIG ?= config/demo.yaml
RUN ?= demo
PYTEST_ARGS ?=

.PHONY: config-doc hostile-table setup demo demo-control status sweep-demo test test-rest test-full test-cpu-variants test-fast lint fmt dag report bench bench-stats bench-epoch memory bench-rearc bench-adapt-science bench-adapt-ablation bench-ladder gpu-check chaos clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

## Whole workflow on the demo preset, locally on CPU, then the HTML report.
demo: setup
	$(BIN)/snakemake all --profile profiles/local --cores $(CORES) --configfile $(DEMO_CONFIG)
	$(BIN)/snakemake all --profile profiles/local --report results/$(RUN)/report.html --configfile $(DEMO_CONFIG)
	@echo
	@echo "Report:  $(CURDIR)/results/$(RUN)/report.html"
	@echo "Summary: $$(ls $(CURDIR)/results/$(RUN)/compare/*/summary.md | tr "\n" " ")"

## Every job of a study at a glance (read-only): `make status`, `make status WATCH=30`,
## `make status STATUS_CONFIG=my.yaml RUN=myrun`.
STATUS_CONFIG ?= $(DEMO_CONFIG)
WATCH ?=
status: setup
	$(BIN)/arctax --config $(STATUS_CONFIG) status results/$(RUN) $(if $(WATCH),--watch $(WATCH),)

## The positive control: the whole workflow on generated rules with known answers (flip and
## gravity trained; their dihedral conjugates and a new colour mapping tested), so the report
## shows models that learnt a rule and one that did not, voting's and adaptation's lifts.
CONTROL_TASKS ?= results/control/tasks
demo-control: setup
	$(BIN)/arctax families --out $(CONTROL_TASKS) --rules flip,gravity --per-rule 300 --per-row 20 --max-side 4
	$(BIN)/snakemake all --profile profiles/local --cores $(CORES) --configfile config/config.yaml $(DEMO_CONFIG) config/control.yaml
	$(BIN)/snakemake all --profile profiles/local --report results/control/report.html --configfile config/config.yaml $(DEMO_CONFIG) config/control.yaml
	@echo
	@echo "Report:  $(CURDIR)/results/control/report.html"
	@echo "Summary: $(CURDIR)/results/control/compare/test/summary.md, $(CURDIR)/results/control/compare/adaptation.md"

## A small hyper-parameter search (6 trials, 2 workers, tiny models), locally, then its report.
SWEEP_CONFIG ?= config/sweep-demo.yaml
SWEEP_RUN ?= sweep-demo
sweep-demo: setup
	$(BIN)/snakemake sweep --profile profiles/local --cores $(CORES) --configfile $(DEMO_CONFIG) $(SWEEP_CONFIG)
	$(BIN)/snakemake sweep --profile profiles/local --report results/$(SWEEP_RUN)/sweep/report.html --configfile $(DEMO_CONFIG) $(SWEEP_CONFIG)
	@echo
	@echo "Trials:  $(CURDIR)/results/$(SWEEP_RUN)/sweep/champion/trials.csv"
	@echo "Best:    $(CURDIR)/results/$(SWEEP_RUN)/sweep/champion/best.yaml"
	@echo "Report:  $(CURDIR)/results/$(SWEEP_RUN)/sweep/report.html"

## The test suite a contributor runs (under 15 min on 2 cores): every fast test and the demo DAG
## end to end. `make test-rest` runs the rest (the local Slurm cluster's tests, which start it with
## scripts/local-slurm, and the longest end-to-end and signal tests, marker `full`); CI runs both.
test: setup
	$(BIN)/python -m pytest -m "not slurm and not full" $(PYTEST_ARGS)

test-rest: setup
	$(BIN)/python -m pytest -m "slurm or full" $(PYTEST_ARGS)

## Everything at once (what CI runs, in one pytest session).
test-full: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The numerically sensitive tests (models, training, evaluation, adaptation) again under the other CPU
## kernel paths this CPU supports (ATEN_CPU_CAPABILITY: default, avx2, avx512): CI runs this
## after `make test`, so a test that holds only on one CPU's kernels fails here, not on a user's.
## The slow end-to-end ones (preemption, DDP, 2-process smoke: 4-7 min per path on 2 cores) are
## left to `make test-cpu-variants VARIANT_MARKS="not slurm"` to keep CI inside its budget.
VARIANT_MARKS ?= not slurm and not slow
SENSITIVE_TESTS ?= tests/models tests/training tests/evaluation tests/adaptation
test-cpu-variants: setup
	@native=$$($(BIN)/python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())"); \
	for c in default avx2 avx512; do \
	  [ "$$c" = "$$native" ] && continue; \
	  [ "$$c" = avx512 ] && [ "$$native" != avx512 ] && continue; \
	  [ "$$c" = avx2 ] && [ "$$native" = default ] && continue; \
	  echo "== ATEN_CPU_CAPABILITY=$$c (native: $$native)"; \
	  ATEN_CPU_CAPABILITY=$$c $(BIN)/python -m pytest -q -m "$(VARIANT_MARKS)" $(SENSITIVE_TESTS) $(PYTEST_ARGS) || exit 1; \
	done

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

## config/README.md's key tables, generated from the schema's descriptions (one place per key).
## The hostile-input table (issue 36): every crafted file, its bound, memory, time and line.
hostile-table: setup
	$(BIN)/python -m tests.hostile.table

config-doc: setup
	$(BIN)/python -c "from arctax.config import write_key_tables; write_key_tables('config/README.md')"
	$(BIN)/python -c "from arctax.layout import write_outputs_doc; write_outputs_doc('docs/OUTPUTS.md')"

lint: setup
	$(BIN)/ruff check src tests workflow/scripts benchmarks checks experiments examples scripts
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks checks experiments examples scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

fmt: setup
	$(BIN)/ruff check --fix src tests workflow/scripts benchmarks checks experiments examples scripts
	$(BIN)/ruff format src tests workflow/scripts benchmarks checks experiments examples scripts
	$(BIN)/snakefmt Snakefile workflow/rules

dag: setup
	$(BIN)/snakemake all --dag --configfile $(DEMO_CONFIG) | dot -Tsvg > dag.svg
	$(BIN)/snakemake all --rulegraph --configfile $(DEMO_CONFIG) | dot -Tsvg > rulegraph.svg
	@echo "wrote dag.svg rulegraph.svg"

report: setup
	$(BIN)/snakemake all --profile profiles/local --report results/$(RUN)/report.html --configfile $(DEMO_CONFIG)
	@echo "Report: $(CURDIR)/results/$(RUN)/report.html"

## Throughput benchmarks (~3-6 min on 2 cores): writes docs/results/BENCHMARKS.md.
bench: setup
	$(BIN)/python benchmarks/bench.py

## The comparison's statistics at the paper's scale (92 tasks x 150 examples x 3 seeds; seconds).
bench-stats: setup
	$(BIN)/python benchmarks/bench_stats.py

## Whole-epoch grouping vs random batches on all ARC-AGI-1 sizes (~8 min on 2 cores):
## writes docs/results/BENCHMARKS_EPOCH.md.
bench-epoch: setup
	$(BIN)/python benchmarks/epoch_estimate.py

## Every job's peak GPU memory at its largest batch, estimated on the meta device (no GPU needed;
## a few minutes): `make memory MEMORY_CONFIG="--config my.yaml" MEMORY_ARGS="--gpu-memory 40"`.
MEMORY_CONFIG ?=
MEMORY_ARGS ?=
memory: setup
	$(BIN)/arctax $(MEMORY_CONFIG) memory $(MEMORY_ARGS)

## Qualify a GPU machine (under 15 min on one GPU): writes GPU_CHECK.md; without CUDA, exit 2 in seconds.
GPU_CHECK_ARGS ?=
LADDER_ARGS ?=
gpu-check: setup
	$(BIN)/python checks/gpu_check.py $(GPU_CHECK_ARGS)

## re-arc on a real checkout: generation figures, prepare time and peak memory (400 x 150:
## about 15 min on a shared core; REARC_OUT keeps the generation, resumed next time).
REARC ?= ../re-arc
REARC_OUT ?= /tmp/arctax-bench-rearc
bench-rearc: setup
	$(BIN)/python benchmarks/bench_rearc.py --repo $(REARC) --out $(REARC_OUT)

## Does per-task adaptation help? Trained models on generated task families, three test
## conditions (docs/results/ADAPTATION.md, "Results"; ~42 min on 2 cores; trained models kept in
## results/bench-adapt-science/ and reused).
bench-adapt-science: setup
	$(BIN)/python experiments/bench_adapt_science.py

## The paper's ablation ladder as its code ran it (config/ladder_as_run.yaml) and corrected
## (config/ladder.yaml) on generated rules with known answers, three seeds: per rung and rule,
## two-level 95% intervals, paired steps with Holm's correction (docs/results/LADDER.md). The
## reduced run (about an hour on 2 shared cores); every rule at the issue's budget:
## LADDER_ARGS="--rules flip,gravity,swap,colour_map --max-side 5 --per-family 400 --per-group 60 --epochs 100".
bench-ladder: setup
	$(BIN)/python experiments/bench_ladder.py $(LADDER_ARGS)

## What each adaptation choice is worth, on the dev tasks (docs/results/ADAPTATION.md, "Ablation").
bench-adapt-ablation: setup
	$(BIN)/python experiments/bench_adapt_science.py --ablation

## Faults injected across a whole study on the local Slurm cluster (needs root: it starts the
## cluster, restarts its daemons, mounts a tmpfs): scancel, kill -9, daemon restarts, the driver
## killed and started again, a drained node, a full disk; then the numbers must equal an
## undisturbed run's (reused while its inputs are unchanged). Writes docs/results/CHAOS.md;
## about 10 min on 2 cores. CHAOS_ARGS="--seed N" repeats a plan.
CHAOS_ARGS ?=
chaos: setup
	$(BIN)/python scripts/chaos.py --report docs/results/CHAOS.md $(CHAOS_ARGS)

clean-demo:
	rm -rf results/$(RUN) .snakemake
