"""Where every job of a study writes, and which jobs a study has: the one results layout.

:data:`RULES` names, per rule of the workflow, its outputs, log, benchmark, resumable state
(:class:`arctax.lifecycle.JobState`'s folder) and attempts log, as path patterns under
``results/<run>/`` with the rule's wildcards (``train/{model}/seed{seed}/best.ckpt``). The rules
read their paths from it (``workflow/rules/*.smk``: ``L.out("train", "best")``), ``arctax status``
reads its jobs from :func:`jobs`, and docs/OUTPUTS.md's table is made from it
(:func:`outputs_table`, ``make config-doc``); ``tests/test_layout.py`` holds every rule of the
workflow to it. Torch-free.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctax.evaluation.reference import REFERENCE
from arctax.settings import Settings


@dataclass(frozen=True)
class Rule:
    """One rule's files: path patterns under ``results/<run>/`` (``None``: it has none)."""

    name: str
    label: str  # how ``arctax status`` names one of its jobs
    outputs: Mapping[str, str]  # output name -> pattern (the rule's named outputs)
    log: str
    benchmark: str | None = None
    state: str | None = None  # the resumable state folder
    history: str | None = None  # every attempt's output
    metrics: str | None = None  # a training's epochs so far (in its state)
    done: str | None = (
        None  # the job's done marker (arctax.lifecycle.JobState), its outputs written
    )
    what: str = ""  # what the files are (docs/OUTPUTS.md)

    @property
    def wildcards(self) -> list[str]:
        """The rule's wildcards, in the order they first appear in its first output."""
        return list(dict.fromkeys(re.findall(r"{(\w+)}", next(iter(self.outputs.values())))))


def _rule(name: str, label: str, outputs: Mapping[str, str], log: str, **kw: Any) -> Rule:
    return Rule(name, label, dict(outputs), log, **kw)


_TRAIN = "train/{model}/seed{seed}"
_EVAL = "eval/{test_set}/{model}/seed{seed}"
_REF = f"eval/{{test_set}}/{REFERENCE}"
_EVAL_FILES = ("per_task.csv", "summary.json", "predictions.json", "submission.json")
_COMPARE = {
    "summary_md": "summary.md", "summary_csv": "summary.csv", "summary_json": "summary.json",
    "per_category": "per_category.csv", "paired": "paired.csv", "audit": "audit.csv",
    "curves": "curves.png", "accuracy": "accuracy.png", "categories": "categories.png",
    "gallery": "gallery.png",
}  # fmt: skip
_SWEEP = {"trials": "trials.csv", "best": "best.yaml", "history": "history.png",
          "importances": "importances.png", "parallel": "parallel.png"}  # fmt: skip
_GATHER = {f"{kind}{suffix}": f"{folder}/{{label}}/{{tag}}/{name}"
           for kind, folder in (("base", "base2"), ("vote", "vote"), ("adapt", "adapt"))
           for suffix, name in (("", "summary.json"), ("_tasks", "per_task.csv"),
                                ("_submission", "submission.json"))}  # fmt: skip


RULES: dict[str, Rule] = {r.name: r for r in [
    _rule("generate_rearc", "re-arc shard {shard}-of-{n}",
          {"record": "rearc/shards/{shard}-of-{n}.json"},
          "logs/generate_rearc/{shard}-of-{n}.log",
          benchmark="benchmarks/generate_rearc/{shard}-of-{n}.tsv", state=".state/rearc",
          done=".state/rearc/shard-{shard}-of-{n}.done",
          what="one file per CPU Slurm job (its tasks' statistics); data.source: rearc"),
    _rule("rearc_gather", "gather re-arc", {"folder": "rearc/re_arc"}, "logs/rearc_gather.log",
          state=".state/rearc",
          what="re-arc's layout: tasks/<id>.json, metadata.json, generation.json"),
    _rule("prepare_data", "prepare data",
          {"train": "data/train.npz", "val": "data/val.npz", "manifest": "data/manifest.json"},
          "logs/prepare_data.log", benchmark="benchmarks/prepare_data.tsv",
          what="the training data, prepared once for all models (plain arrays, checksums)"),
    _rule("prepare_test", "prepare test {test_set}",
          {"test": "data/test/{test_set}/test.npz",
           "manifest": "data/test/{test_set}/manifest.json"},
          "logs/prepare_test/{test_set}.log", benchmark="benchmarks/prepare_test/{test_set}.tsv",
          what="each test set, prepared apart"),
    _rule("smoke_test", "smoke {model}", {"report": "smoke/{model}.json"},
          "logs/smoke_test/{model}.log", benchmark="benchmarks/smoke_test/{model}.tsv",
          what="one model through its training path: checks and figures"),
    _rule("smoke_report", "smoke report", {"report": "smoke/report.json"},
          "logs/smoke_report.log", benchmark="benchmarks/smoke_report.tsv",
          what="every model's smoke test in one table"),
    _rule("train", "train {model} seed{seed}",
          {"best": f"{_TRAIN}/best.ckpt", "last": f"{_TRAIN}/last.ckpt",
           "metrics": f"{_TRAIN}/metrics.csv", "provenance": f"{_TRAIN}/provenance.json"},
          "logs/train/{model}/seed{seed}.log",
          benchmark="benchmarks/train/{model}/seed{seed}.tsv",
          state=".state/train/{model}/seed{seed}",
          history=".state/train/{model}/seed{seed}.attempts.log",
          metrics=".state/train/{model}/seed{seed}/metrics.csv",
          done=".state/train/{model}/seed{seed}/finished.json",
          what="weights_only-loadable checkpoints; metrics.csv one row per epoch; provenance: "
               "config, versions, device, Slurm job, Trial 69 audit"),
    _rule("bootstrap_champion", "bootstrap champion",
          {"best": f"bootstrap/{REFERENCE}.ckpt", "provenance": "bootstrap/provenance.json"},
          "logs/bootstrap_champion.log", benchmark="benchmarks/bootstrap_champion.tsv",
          state=".state/bootstrap", history=".state/bootstrap.attempts.log",
          metrics=".state/bootstrap/metrics.csv", done=".state/bootstrap/finished.json",
          what="the reference trained here (champion.bootstrap)"),
    _rule("evaluate", "evaluate {test_set} {model} seed{seed}",
          {f.split(".")[0]: f"{_EVAL}/{f}" for f in _EVAL_FILES},
          "logs/eval/{test_set}/{model}/seed{seed}.log",
          benchmark="benchmarks/eval/{test_set}/{model}/seed{seed}.tsv",
          state=".state/eval/{test_set}/{model}/seed{seed}",
          done=".state/eval/{test_set}/{model}/seed{seed}/done.json",
          what="one row per test query (per_task.csv), the answers in ARC Prize format"),
    _rule("evaluate_reference", f"evaluate {{test_set}} {REFERENCE}",
          {f.split(".")[0]: f"{_REF}/{f}" for f in _EVAL_FILES},
          f"logs/eval/{{test_set}}/{REFERENCE}.log",
          benchmark=f"benchmarks/eval/{{test_set}}/{REFERENCE}.tsv",
          state=f".state/eval/{{test_set}}/{REFERENCE}",
          done=f".state/eval/{{test_set}}/{REFERENCE}/done.json",
          what="the reference, the same files, whichever way it came"),
    _rule("compare", "compare {test_set}",
          {k: f"compare/{{test_set}}/{f}" for k, f in _COMPARE.items()},
          "logs/compare/{test_set}.log", benchmark="benchmarks/compare/{test_set}.tsv",
          what="each test set's comparison: tables, paired statistics, audit, figures"),
    _rule("adapt", "adapt {label}/{tag} {shard}-of-{n}",
          {"shard": "adapt/{label}/{tag}/shards/{shard}-of-{n}.json"},
          "logs/adapt/{label}/{tag}/{shard}-of-{n}.log",
          benchmark="benchmarks/adapt/{label}/{tag}/{shard}-of-{n}.tsv",
          state=".state/adapt/{label}/{tag}", done=".state/adapt/{label}/{tag}/shard{shard}-of-{n}.done",
          what="one file per Slurm job: its tasks' answers and losses"),
    _rule("adapt_gather", "gather adapt {label}/{tag}", _GATHER,
          "logs/adapt/{label}/{tag}/gather.log",
          what="the base model's own attempts (base2/), voting alone (vote/), adapted (adapt/)"),
    _rule("compare_adapt", "compare adaptation",
          {"md": "compare/adaptation.md", "csv": "compare/adaptation.csv",
           "gap": "compare/gap.csv", "gap_png": "compare/gap.png"},
          "logs/compare_adapt.log", benchmark="benchmarks/compare_adapt.tsv",
          what="base vs voting vs adapted; the gap per category"),
    _rule("sweep_worker", "sweep {model} worker{worker}",
          {"record": "sweep/{model}/workers/{worker}.json"},
          "logs/sweep/{model}/worker{worker}.log",
          benchmark="benchmarks/sweep/{model}/worker{worker}.tsv", state=".state/sweep/{model}",
          history=".state/sweep/{model}/worker{worker}.attempts.log",
          what="what each worker job ran (the study itself: sweep/<model>/study.log)"),
    _rule("sweep_report", "sweep report {model}",
          {k: f"sweep/{{model}}/{f}" for k, f in _SWEEP.items()},
          "logs/sweep/{model}/report.log", benchmark="benchmarks/sweep/{model}/report.tsv",
          what="`snakemake sweep`: every trial; the best one as a config overlay; figures"),
]}  # fmt: skip


def study(s: Settings) -> Layout:
    """The layout of the workflow's study of ``s``: ``results/<run>`` (relative to the working
    directory, as the rules and their scripts see it)."""
    return Layout(f"results/{s.run}")


class Layout:
    """The paths of the study in ``out`` (``results/<run>``): a rule's pattern with its
    wildcards left in (what a rule declares), or filled in (``**wildcards``)."""

    def __init__(self, out: str | Path) -> None:
        self.out = str(out)

    def _path(self, pattern: str, wildcards: Mapping[str, Any]) -> str:
        path = f"{self.out}/{pattern}"
        for k, v in wildcards.items():
            path = path.replace(f"{{{k}}}", str(v))
        return path

    def output(self, rule: str, name: str, **wildcards: Any) -> str:
        """Output ``name`` of ``rule``."""
        return self._path(RULES[rule].outputs[name], wildcards)

    def outputs(self, rule: str, **wildcards: Any) -> dict[str, str]:
        """Every output of ``rule``, by name."""
        return {k: self._path(p, wildcards) for k, p in RULES[rule].outputs.items()}

    def log(self, rule: str, **wildcards: Any) -> str:
        return self._path(RULES[rule].log, wildcards)

    def benchmark(self, rule: str, **wildcards: Any) -> str:
        return self._path(RULES[rule].benchmark or "", wildcards)

    def state(self, rule: str, **wildcards: Any) -> str:
        return self._path(RULES[rule].state or "", wildcards)

    def folder(self, rule: str, **wildcards: Any) -> str:
        """The folder of ``rule``'s first output (an evaluation's, a training's)."""
        return str(Path(next(iter(self.outputs(rule, **wildcards).values()))).parent)

    def eval_dirs(self, models: Iterable[str], seeds: Iterable[int], test_set: str) -> dict:
        """Evaluation folders of one test set by label: each model's seeds, the reference."""
        dirs = {m: [self.folder("evaluate", test_set=test_set, model=m, seed=s) for s in seeds]
                for m in models}  # fmt: skip
        dirs[REFERENCE] = [self.folder("evaluate_reference", test_set=test_set)]
        return dirs

    def adapt_dirs(self, adapted: Iterable[tuple[str, str]]) -> dict[str, dict[str, list[str]]]:
        """label -> {"base", "vote", "adapt": [folders]} of the adapted runs."""
        dirs: dict[str, dict[str, list[str]]] = {}
        for label, tag in adapted:
            outs = self.outputs("adapt_gather", label=label, tag=tag)
            d = dirs.setdefault(label, {"base": [], "vote": [], "adapt": []})
            for kind in d:
                d[kind].append(str(Path(outs[kind]).parent))
        return dirs

    def summaries(self, dirs: Iterable[Iterable[str]]) -> list[str]:
        """Each folder's ``summary.json``, once each, in order."""
        return list(dict.fromkeys(f"{d}/summary.json" for ds in dirs for d in ds))

    def adapt_eval_dirs(self, s: Settings, plan: Any) -> dict[str, list[str]]:
        """The base evaluations the adaptation comparison reads: the adapted models' and the
        reference's, on the adapted test set (no other model's)."""
        keep = [*self.adapt_dirs(plan.adapted), REFERENCE]
        dirs = self.eval_dirs(s.models, s.seeds, plan.adapt_test_set)
        return {label: d for label, d in dirs.items() if label in keep}

    def adapt_summaries(self, s: Settings, plan: Any) -> list[str]:
        """What the adaptation comparison reads: the adapted runs' summaries and the base
        evaluations of :meth:`adapt_eval_dirs`."""
        runs = [d[k] for d in self.adapt_dirs(plan.adapted).values() for k in d]
        return self.summaries([*self.adapt_eval_dirs(s, plan).values(), *runs])

    def targets(self, plan: Any) -> list[str]:
        """What ``snakemake all`` makes: the smoke report, each test set's comparison, and the
        adaptation's when runs are adapted."""
        files = [f for t in plan.test_sets for f in self.outputs("compare", test_set=t).values()]
        if plan.adapted:
            files += list(self.outputs("compare_adapt").values())
        return [self.output("smoke_report", "report"), *files]

    def sweep_targets(self, s: Settings) -> list[str]:
        """What ``snakemake sweep`` makes: each study's trials, best overlay and plots."""
        return [f for m in s.sweep.models for f in self.outputs("sweep_report", model=m).values()]


def rearc_plan(s: Settings) -> tuple[list[str], str, int]:
    """A generation's tasks (from the checkout), its code's sha256 and its shard count."""
    from arctax.data import rearc_generate as rg

    r = s.data.rearc
    ids = rg.task_ids(r.repo, r.tasks)
    return ids, rg.checkout_version(r.repo)["code_sha256"], rg.n_shards(len(ids), r.tasks_per_job)


def adapt_shard_count(s: Settings, manifest: str | Path) -> int:
    """How many shards an adapted run has: from the prepared test set's ``manifest.json``."""
    from arctax.adaptation.shards import n_shards

    return n_shards(len(json.loads(Path(manifest).read_text())["splits"]["test"]), s.adapt)


def shard_ids(ids: list[str], shard: int | str, n: int | str) -> list[str]:
    """The task ids of re-arc shard ``shard`` of ``n`` (wildcard values)."""
    from arctax.data.rearc_generate import shard_ids as block

    return block(ids, int(shard), int(n))


def rearc_shard_count(s: Settings) -> int:
    """How many re-arc shards the generation has (reads the checkout's task list)."""
    return rearc_plan(s)[2]


def shard_names(n: int) -> list[dict[str, int]]:
    return [{"shard": i, "n": n} for i in range(n)]


@dataclass
class Job:
    """One job of the study: its rule, wildcard values and files (full paths)."""

    rule: str
    wildcards: dict[str, Any]
    label: str
    outputs: list[Path]
    log: Path
    state: Path | None = None
    history: Path | None = None
    metrics: Path | None = None  # a training's metrics.csv while it runs
    done: Path | None = None  # its done marker: written after its outputs
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``rule[wildcard=value,...]``, wildcards sorted (as a DAG's dump names a job)."""
        wc = ",".join(f"{k}={v}" for k, v in sorted(self.wildcards.items()))
        return f"{self.rule}[{wc}]"


def job(out: str | Path, rule: str, **wildcards: Any) -> Job:
    """The job of ``rule`` with ``wildcards`` in the study ``out``."""
    r, lay = RULES[rule], Layout(out)
    fill = {k: str(v) for k, v in wildcards.items()}
    return Job(
        rule,
        fill,
        lay._path(r.label, fill).removeprefix(f"{lay.out}/"),
        [Path(p) for p in lay.outputs(rule, **fill).values()],
        Path(lay.log(rule, **fill)),
        Path(lay.state(rule, **fill)) if r.state else None,
        Path(lay._path(r.history, fill)) if r.history else None,
        Path(lay._path(r.metrics, fill)) if r.metrics else None,
        Path(lay._path(r.done, fill)) if r.done else None,
    )


def began(out: str | Path, rule: str) -> bool:
    """Whether any job of ``rule`` ever ran in ``out``: the folder of its outputs or of its
    logs exists (the part of their patterns before the first wildcard)."""

    def static(pattern: str) -> Path | None:  # "sweep/{model}/x.json" -> sweep
        prefix = pattern.split("{")[0]
        return Path(prefix.rsplit("/", 1)[0]) if "/" in prefix else None

    r = RULES[rule]
    folders = [static(p) for p in (*r.outputs.values(), r.log)]
    return any((Path(out) / f).is_dir() for f in folders if f is not None)


def jobs(
    s: Settings,
    out: str | Path,
    plan: Any,
    adapt_shards: int | None = None,
    rearc_shards: int | None = None,
    sweep: bool = False,
) -> list[Job]:
    """Every job the study in ``out`` runs (``snakemake all``, and ``snakemake sweep`` with
    ``sweep``), as its DAG does: ``plan`` is :func:`arctax.check.plan`'s; ``adapt_shards``:
    the shards per adapted run (None: not planned yet, the test set is not prepared: each
    adapted run is listed by its gather job); ``rearc_shards``: the re-arc shards."""
    models, seeds, sets = list(s.models), list(s.seeds), list(plan.test_sets)
    out = str(out)
    found: list[Job] = []
    if plan.generate_rearc and rearc_shards:
        found += [job(out, "generate_rearc", **wc) for wc in shard_names(rearc_shards)]
        found.append(job(out, "rearc_gather"))
    found.append(job(out, "prepare_data"))
    found += [job(out, "prepare_test", test_set=t) for t in sets]
    found += [job(out, "smoke_test", model=m) for m in models]
    found.append(job(out, "smoke_report"))
    found += [job(out, "train", model=m, seed=x) for m in models for x in seeds]
    if plan.reference_way == "bootstrap":
        found.append(job(out, "bootstrap_champion"))
    for t in sets:
        found += [job(out, "evaluate", test_set=t, model=m, seed=x) for m in models for x in seeds]
        found.append(job(out, "evaluate_reference", test_set=t))
    found += [job(out, "compare", test_set=t) for t in sets]
    for label, tag in plan.adapted:
        if adapt_shards is not None:
            found += [job(out, "adapt", label=label, tag=tag, **wc)
                      for wc in shard_names(adapt_shards)]  # fmt: skip
        found.append(job(out, "adapt_gather", label=label, tag=tag))
    if plan.adapted:
        found.append(job(out, "compare_adapt"))
    if sweep:
        for m in s.sweep.models:
            found += [job(out, "sweep_worker", model=m, worker=w) for w in range(s.sweep.workers)]
            found.append(job(out, "sweep_report", model=m))
    return found


def found_jobs(out: str | Path, known: Iterable[Job]) -> list[Job]:
    """Jobs whose logs are in ``out/logs`` but that ``known`` does not hold (another seed, a
    shard count planned before the test set changed): every rule's log pattern, matched."""
    logs = Path(out) / "logs"
    if not logs.is_dir():
        return []
    seen = {j.log for j in known}
    extra = []
    for p in sorted(q for q in logs.rglob("*.log") if q.is_file() and q not in seen):
        rel = p.relative_to(Path(out)).as_posix()
        for name, r in RULES.items():
            rx = re.escape(r.log)
            for w in re.findall(r"{(\w+)}", r.log):
                rx = rx.replace(re.escape(f"{{{w}}}"), f"(?P<{w}>[^/]+?)", 1)
            m = re.fullmatch(rx, rel)
            if m:
                extra.append(job(out, name, **m.groupdict()))
                seen.add(p)
                break
    return extra


def outputs_table() -> str:
    """docs/OUTPUTS.md's table: each rule's files under ``results/<run>/`` (``make config-doc``)."""
    rows = ["| rule | writes (under `results/<run>/`) | log, state | what |", "|---|---|---|---|"]
    for r in RULES.values():
        files = "<br>".join(f"`{p}`" for p in r.outputs.values())
        side = "<br>".join(f"`{p}`" for p in (r.log, r.state, r.history) if p)
        rows.append(f"| `{r.name}` | {files} | {side} | {r.what} |")
    return "\n".join(rows) + "\n"


OUTPUTS_TABLE = re.compile(r"(<!-- layout: .*?-->\n)(.*?)(<!-- end layout -->)", re.S)


def outputs_doc_text(text: str) -> str:
    """``text`` (docs/OUTPUTS.md) with its generated table made anew from :data:`RULES`."""
    return OUTPUTS_TABLE.sub(lambda m: m[1] + outputs_table() + m[3], text)


def write_outputs_doc(path: str | Path) -> None:
    """Regenerate the table of ``path`` (docs/OUTPUTS.md) in place (``make config-doc``)."""
    from arctax.io import atomic_write_text

    p = Path(path)
    atomic_write_text(p, outputs_doc_text(p.read_text()))
