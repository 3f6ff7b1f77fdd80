# Every input and param function of the workflow, each a line or two over the library: the
# typed settings (S, built once, checked once: arctax.check), their plan (PLAN), the results
# layout (L: arctax.layout, every path) and what each job depends on (arctax.params).
import json
import re
import sys

from snakemake.exceptions import WorkflowError

from arctax import layout, params
from arctax.check import check, reads_reference, workflow_settings
from arctax.config import ConfigError
from arctax.data.testsets import VAL
from arctax.evaluation.reference import REFERENCE, ReferenceError, resolve_reference

try:
    S = workflow_settings(config, workflow.config_settings.config)
    PLAN = check(S)
except ConfigError as e:
    raise WorkflowError(f"{e}\n(the keys are documented in config/README.md)") from None
except ReferenceError as e:
    raise WorkflowError(str(e)) from None
L = layout.study(S)
OUT = L.out
MODELS, SEEDS, TEST_SETS = list(S.models), list(S.seeds), PLAN.test_sets
DATA_FILES = list(L.outputs("prepare_data").values())
ADAPT_DATA = list(L.outputs("prepare_test", test_set=PLAN.adapt_test_set).values())
_REFERENCE = []  # resolve_reference's result, once per parse


wildcard_constraints:
    model="|".join(MODELS),
    test_set="|".join(re.escape(name) for name in TEST_SETS),
    seed=r"\d+",
    label="|".join([*MODELS, REFERENCE]),
    tag=r"seed\d+|reference",
    shard=r"\d+",
    n=r"\d+",


def get_reference():
    """The champion reference, checked the first time the DAG needs it: `snakemake -n all`
    stops there with the ways forward; a target that never reads it (sweep) never checks.
    """
    if not _REFERENCE:
        try:
            _REFERENCE.append(resolve_reference(S.champion, S.models))
        except ReferenceError as e:
            raise WorkflowError(str(e)) from None
    return _REFERENCE[0]


def get_reference_input(wildcards):
    """The file the reference's evaluation reads: the user's checkpoint (read only), the one
    bootstrapped here, the predictions file, or the checkpoint an adapter loads."""
    ref = get_reference()
    return (
        L.output("bootstrap_champion", "best") if ref.way == "bootstrap" else ref.path
    )


def get_reference_params(wildcards):
    """How the reference is given (a JSON string: Snakemake would iterate a dict)."""
    return json.dumps(get_reference().as_dict())


def get_train_params(wildcards):
    """What a training (and its smoke test) depends on (arctax.params.train)."""
    return params.train(S, wildcards.model)


def get_bootstrap_params(wildcards):
    """The bootstrapped reference is the champion architecture under Trial 69."""
    return params.train(S, "champion")


def get_training_data_params(wildcards):
    """What the training data depend on (the test sets' keys left out)."""
    return params.data(S)


def get_test_set_params(wildcards):
    """What one test set's preparation depends on: its source and its data keys."""
    return params.test_set(S, wildcards.test_set)


def get_prepare_test_inputs(wildcards):
    """The training manifest, and for a `val` test set the val split (its test split)."""
    files = {"training": L.output("prepare_data", "manifest")}
    if TEST_SETS[wildcards.test_set] == VAL:
        files["val"] = L.output("prepare_data", "val")
    return files


def get_test_source(wildcards):
    """The source of the compared test set (the paper's rows: its val split, ARC-AGI-2)."""
    return TEST_SETS[wildcards.test_set]


def get_test_set_files(wildcards):
    """The prepared files of the evaluated test set."""
    return list(L.outputs("prepare_test", test_set=wildcards.test_set).values())


# re-arc generated in the workflow (data.source: rearc): its shards, planned from the checkout
try:
    _IDS, _CODE, _N = layout.rearc_plan(S) if PLAN.generate_rearc else ([], "", 0)
except ValueError as e:
    raise WorkflowError(str(e)) from None
REARC_SHARDS = [
    L.output("generate_rearc", "record", **wc) for wc in layout.shard_names(_N)
]


def get_rearc_params(wildcards):
    """What a shard's examples depend on: its tasks, the settings, the checkout's code."""
    return params.rearc_shard(
        S, layout.shard_ids(_IDS, wildcards.shard, wildcards.n), _CODE
    )


def get_training_source(wildcards):
    """The generated re-arc folder when the workflow makes it, else nothing (data.source)."""
    return [L.output("rearc_gather", "folder")] if PLAN.generate_rearc else []


def get_eval_dirs(wildcards):
    """The comparison's evaluation folders (a JSON string: see get_reference_params)."""
    return json.dumps(L.eval_dirs(MODELS, SEEDS, wildcards.test_set))


def get_eval_summaries(wildcards):
    """Every evaluation summary one test set's comparison reads."""
    return L.summaries(L.eval_dirs(MODELS, SEEDS, wildcards.test_set).values())


def get_provenance(wildcards):
    """Provenance of every trained run (the audit table reads them)."""
    return [
        L.output("train", "provenance", model=m, seed=s) for m in MODELS for s in SEEDS
    ]


def get_adapt_checkpoint(wildcards):
    """The base weights a shard adapts: a trained model's best.ckpt, or the reference's."""
    if wildcards.label == REFERENCE:
        return get_reference_input(wildcards)
    return L.output("train", "best", model=wildcards.label, seed=wildcards.tag[4:])


def get_adapt_params(wildcards):
    """What a shard's answers depend on (arctax.params.adapt_shard)."""
    return params.adapt_shard(S)


def get_adapt_shards(wildcards):
    """Every shard of one adapted run; their count comes from the prepared test set."""
    manifest = checkpoints.prepare_test.get(
        test_set=PLAN.adapt_test_set
    ).output.manifest
    run = {"label": wildcards.label, "tag": wildcards.tag}
    n = layout.adapt_shard_count(S, manifest)
    return [L.output("adapt", "shard", **run, **wc) for wc in layout.shard_names(n)]


def get_adapt_summaries(wildcards):
    """The adapted runs' summaries and the base evaluations they are compared with."""
    return L.adapt_summaries(S, PLAN)


def get_sweep_params(wildcards):
    """What a study's trials depend on (arctax.params.sweep)."""
    return params.sweep(S, wildcards.model)


def get_sweep_workers(wildcards):
    """The records of a study's `sweep.workers` workers."""
    return [
        L.output("sweep_worker", "record", model=wildcards.model, worker=w)
        for w in range(S.sweep.workers)
    ]


# The reference is checked now, while parsing, so `snakemake -n` refuses a bad one with the
# ways forward (later, Snakemake skips a failing input function whose job's outputs exist).
# Not in a job's own process, nor for a search alone (never reads it: arctax.check).
if workflow.is_main_process and reads_reference(sys.argv[1:], OUT):
    get_reference()
