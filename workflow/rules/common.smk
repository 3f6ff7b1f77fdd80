# Config validation, shared names and every input/param function of the workflow.
import json
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from arctax.config import (
    ConfigError,
    check_global_batch,
    check_model_lists,
    check_trackers,
    coerce_to_schema,
    fill_defaults,
    model_class,
    model_config,
    model_names,
    validate_config,
)
from arctax.data.testsets import (
    VAL,
    check_adapt_set,
    generating,
    named_sets,
    set_config,
    training_data_config,
)
from arctax.plugins import source_sha256
from arctax.evaluation.reference import ReferenceError, reference_way, resolve_reference
from arctax.search.space import check_space
from arctax.settings import Adapt, Champion, Data, Sweep, Taxonomy, Trainer, Trial69

# `--config key=[1,2]` / `key={"a": 3}` arrive as strings: read THOSE as the schema's types.
# Values from config files are never converted: a "32" there is an error naming the key.
update_config(config, coerce_to_schema(dict(workflow.config_settings.config)))
try:
    validate_config(config)  # config/config.schema.yaml; one line naming the key
except ConfigError as e:
    raise WorkflowError(f"{e}\n(the keys are documented in config/README.md)") from None
fill_defaults(config)
# Checks across keys, refused here rather than in a Slurm job: trainer.devices must split the
# global batch of trial69.batch_size; the trackers of trainer.loggers must be installed;
# sweep.space must name real keys with valid ranges; the test sets (data.test_sets /
# data.test_source) and the re-arc generation must be well formed.
try:
    check_global_batch(config)
    check_model_lists(config)
    check_trackers(config)  # trainer.loggers: each tracker's extra installed
    check_space(config)
    TEST_SETS = named_sets(config)  # {name: source}, in config order
    GENERATE_REARC = generating(config)
    ADAPT_TEST_SET = config["adapt"]["test_set"] or next(iter(TEST_SETS))
    if ADAPT_TEST_SET not in TEST_SETS:
        raise ConfigError(
            f"config key 'adapt.test_set': {ADAPT_TEST_SET!r} is not a test set "
            f"(data.test_sets has {', '.join(TEST_SETS)})"
        )
    check_adapt_set(config, ADAPT_TEST_SET)
except ConfigError as e:
    raise WorkflowError(f"{e}\n(the keys are documented in config/README.md)") from None

MODELS = model_names(config)  # the built-ins and any model of your own (docs/MODELS.md)


def check_own_models():
    """A model of the user's own (`models.<name>.class`) is checked now, so `snakemake -n`
    stops with one line: the class imports, its block fits its constructor, it has the
    protocol. (torch is imported only when there is one.)"""
    own = [m for m in MODELS if model_class(config, m)]
    if not own:
        return
    from arctax.models import ModelError, resolve_model

    for m in own:
        try:
            resolve_model(m, model_config(config, m), model_class(config, m))
        except ModelError as e:
            raise WorkflowError(str(e)) from None


check_own_models()
REFERENCE = "champion_bootstrap"  # label of the champion reference in every table
RUN = config["run"]
OUT = f"results/{RUN}"
# Which way the reference is given; the file itself is checked at the end of this file.
try:
    WAY = reference_way(Champion.of(config))
except ReferenceError as e:
    raise WorkflowError(str(e)) from None
_REFERENCE = []  # resolve_reference's result, once per parse
# The training data (what smoke tests, trainings and searches read); each test set has a
# folder of its own (test_set_files), so a test set never touches training.
DATA = f"{OUT}/data"
DATA_FILES = [f"{DATA}/train.npz", f"{DATA}/val.npz", f"{DATA}/manifest.json"]

# A test set's prepared files (evaluations read the folder); ADAPT_DATA: the adapted one.
TEST_SET_FILES = {
    name: [f"{DATA}/test/{name}/test.npz", f"{DATA}/test/{name}/manifest.json"]
    for name in TEST_SETS
}
ADAPT_DATA = TEST_SET_FILES[ADAPT_TEST_SET]
SEEDS = config["seeds"]
BOOTSTRAP_CKPT = f"{OUT}/bootstrap/champion_bootstrap.ckpt"
COMPARE_FILES = [
    "summary.md",
    "summary.csv",
    "summary.json",
    "per_category.csv",
    "audit.csv",
    "curves.png",
    "accuracy.png",
    "categories.png",
    "gallery.png",
]
ADAPT_COMPARE_FILES = ["adaptation.csv", "gap.csv", "gap.png"]


ADAPT_SETTINGS = Adapt.of(config)  # typed; owns which keys a shard depends on
TRIAL69 = Trial69.of(config)


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
            _REFERENCE.append(resolve_reference(Champion.of(config), config))
        except ReferenceError as e:
            raise WorkflowError(str(e)) from None
    return _REFERENCE[0]


def get_reference_input(wildcards):
    """The file the reference's evaluation reads: the user's checkpoint (read only), the one
    bootstrapped here, the predictions file, or the checkpoint an adapter loads."""
    ref = get_reference()
    return BOOTSTRAP_CKPT if ref.way == "bootstrap" else ref.path


def get_reference_params(wildcards):
    """How the reference is given (a JSON string: Snakemake would iterate a dict)."""
    return json.dumps(get_reference().as_dict())


def _model_recipe(model):
    """A model's constructor arguments, and for a model of your own its class and the sha256
    of the file defining it: editing that file re-runs the model's jobs."""
    recipe = {"model": model_config(config, model)}
    if model_class(config, model):
        recipe["class"] = model_class(config, model)
        recipe["code"] = source_sha256(recipe["class"])
    return recipe


def _recipe(model):
    # a JSON string, not a dict: Snakemake iterates a dict returned by a param function
    # (keeping only its keys), which would hide a changed value from the params trigger
    # the trainer keys that can change what is computed (Trainer's method role): a changed
    # logger, tracker or stop margin trains nothing again
    blocks = {"trial69": TRIAL69.as_dict(), "trainer": Trainer.of(config).method()}
    blocks["data"] = training_data_config(config)  # never the test sets
    return json.dumps({**_model_recipe(model), **blocks}, sort_keys=True)


def get_train_params(wildcards):
    """What a training run depends on: its model's block, Trial 69, the trainer's method keys
    and the training data's settings (not the test sets: adding or changing one trains nothing
    again)."""
    return _recipe(wildcards.model)


def get_training_data_params(wildcards):
    """What the training data depend on (the test sets' keys left out)."""
    return json.dumps(
        {
            "data": training_data_config(config),
            "taxonomy": Taxonomy.of(config).as_dict(),
        },
        sort_keys=True,
    )


def get_test_set_params(wildcards):
    """What one test set's preparation depends on: its source and the shared settings."""
    return json.dumps(
        {
            "set": set_config(config, wildcards.test_set),
            "taxonomy": Taxonomy.of(config).as_dict(),
        },
        sort_keys=True,
    )


def get_prepare_test_inputs(wildcards):
    """What one test set's preparation reads: the training manifest, and for a `val` test set
    the training data's val split itself (copied as its test split)."""
    files = {"training": f"{DATA}/manifest.json"}
    if TEST_SETS[wildcards.test_set] == VAL:
        files["val"] = f"{DATA}/val.npz"
    return files


def get_test_source(wildcards):
    """The source of the compared test set (the paper's rows: its val split, ARC-AGI-2)."""
    return TEST_SETS[wildcards.test_set]


def get_test_set_files(wildcards):
    """The prepared files of the evaluated test set."""
    return TEST_SET_FILES[wildcards.test_set]


# ---- re-arc generated in the workflow (data.source: rearc, data.rearc.repo) ----
REARC = Data.of(config).rearc
REARC_DIR = f"{OUT}/rearc/re_arc"
REARC_SHARDS = []
if GENERATE_REARC:
    from arctax.data import rearc_generate

    try:
        _REARC_IDS = rearc_generate.task_ids(REARC.repo, REARC.tasks)
        _REARC_SETTINGS = rearc_generate.settings(config)
        _REARC_CODE = rearc_generate.checkout_version(REARC.repo)["code_sha256"]
    except ValueError as e:
        raise WorkflowError(str(e)) from None
    _N = rearc_generate.n_shards(len(_REARC_IDS), REARC.tasks_per_job)
    REARC_SHARDS = [f"{OUT}/rearc/shards/{i}-of-{_N}.json" for i in range(_N)]


def get_rearc_params(wildcards):
    """What a shard's examples depend on: its tasks, the settings and the checkout's code
    (not the checkout's path: a moved checkout regenerates nothing)."""
    ids = rearc_generate.shard_ids(_REARC_IDS, int(wildcards.shard), int(wildcards.n))
    s = _REARC_SETTINGS
    return json.dumps(
        {"tasks": ids, "settings": [s.n_examples, s.seed, s.diff_lb, s.diff_ub,
                                    s.attempts_per_example], "code": _REARC_CODE},
    )  # fmt: skip


def get_training_source(wildcards):
    """The generated re-arc folder when the workflow makes it, else nothing (data.source)."""
    return [REARC_DIR] if GENERATE_REARC else []


def get_bootstrap_params(wildcards):
    """The bootstrapped reference is the champion architecture under Trial 69."""
    return _recipe("champion")


def eval_dirs(test_set):
    """Evaluation folders of one test set by label: each model's seeds, and the reference."""
    dirs = {m: [f"{OUT}/eval/{test_set}/{m}/seed{s}" for s in SEEDS] for m in MODELS}
    dirs[REFERENCE] = [f"{OUT}/eval/{test_set}/{REFERENCE}"]
    return dirs


def get_eval_dirs(wildcards):
    """The comparison's evaluation folders (a JSON string: see _recipe)."""
    return json.dumps(eval_dirs(wildcards.test_set))


def get_eval_summaries(wildcards):
    """Every evaluation summary one test set's comparison reads."""
    return [
        f"{d}/summary.json" for ds in eval_dirs(wildcards.test_set).values() for d in ds
    ]


def get_provenance(wildcards):
    """Provenance of every trained run (the audit table reads them)."""
    return expand(
        f"{OUT}/train/{{model}}/seed{{seed}}/provenance.json", model=MODELS, seed=SEEDS
    )


def adapted_runs():
    """(label, tag) of every adapted run: each seed of `adapt.models`, and the reference when
    it is a checkpoint (`adapt.reference`); none when `adapt.enabled` is off."""
    if not ADAPT_SETTINGS.enabled:
        return []
    runs = [(m, f"seed{s}") for m in ADAPT_SETTINGS.models for s in SEEDS]
    if ADAPT_SETTINGS.reference and WAY in ("checkpoint", "bootstrap"):
        runs.append((REFERENCE, "reference"))
    return runs


def get_adapt_checkpoint(wildcards):
    """The base weights a shard adapts: a trained model's best.ckpt, or the reference's."""
    if wildcards.label == REFERENCE:
        return get_reference_input(wildcards)
    return f"{OUT}/train/{wildcards.label}/{wildcards.tag}/best.ckpt"


def get_adapt_params(wildcards):
    """What a shard's answers depend on: the adapt block (not which runs are adapted: adding
    a model to adapt.models adapts only it) and the decoding limits."""
    keys = ("max_new_tokens", "batch_size")
    return json.dumps(
        {
            "adapt": ADAPT_SETTINGS.shard_params(),
            "eval": {k: config["eval"][k] for k in keys},
        },
        sort_keys=True,
    )


def get_adapt_shards(wildcards):
    """Every shard of one adapted run; their count comes from the prepared test set."""
    from arctax.adaptation.shards import n_shards

    manifest = checkpoints.prepare_test.get(test_set=ADAPT_TEST_SET).output.manifest
    n_test = len(json.loads(open(manifest).read())["splits"]["test"])
    n = n_shards(n_test, ADAPT_SETTINGS)
    base = f"{OUT}/adapt/{wildcards.label}/{wildcards.tag}/shards"
    return [f"{base}/{i}-of-{n}.json" for i in range(n)]


def get_adapt_dirs(wildcards=None):
    """label -> {"base": [folders], "vote": [...], "adapt": [...]} for the comparison (base:
    the model's own two attempts on the adapted tasks, scored by the adaptation stage).
    """
    dirs = {}
    for label, tag in adapted_runs():
        d = dirs.setdefault(label, {"base": [], "vote": [], "adapt": []})
        d["base"].append(f"{OUT}/base2/{label}/{tag}")
        d["vote"].append(f"{OUT}/vote/{label}/{tag}")
        d["adapt"].append(f"{OUT}/adapt/{label}/{tag}")
    return dirs


def get_adapt_eval_dirs():
    """The base evaluations the adaptation comparison needs: adapted models and reference, on
    the adapted test set (adapt.test_set)."""
    keep = [*get_adapt_dirs(), REFERENCE]
    return {label: d for label, d in eval_dirs(ADAPT_TEST_SET).items() if label in keep}


def get_adapt_summaries(wildcards):
    """What the adaptation comparison reads: the adapted runs' voting and adapted summaries,
    and the base evaluations of the adapted models and of the reference (no other model's).
    """
    dirs = get_adapt_dirs()
    out = [f"{d}/summary.json" for ds in get_adapt_eval_dirs().values() for d in ds]
    out += [
        f"{d}/summary.json"
        for ds in dirs.values()
        for d in [*ds["base"], *ds["vote"], *ds["adapt"]]
    ]
    return list(dict.fromkeys(out))


def get_final_outputs():
    """Targets of `rule all`; smoke report, each test set's comparison, adaptation."""
    files = [f"{OUT}/compare/{t}/{f}" for t in TEST_SETS for f in COMPARE_FILES]
    if adapted_runs():
        files += [f"{OUT}/compare/{f}" for f in ["adaptation.md", *ADAPT_COMPARE_FILES]]
    return [f"{OUT}/smoke/report.json", *files]


SWEEP = Sweep.of(config)  # typed; owns which keys the workers depend on
SWEEP_FILES = [
    "trials.csv",
    "best.yaml",
    "history.png",
    "importances.png",
    "parallel.png",
]


def get_sweep_params(wildcards):
    """What a study's trials depend on (its space, n_trials, per-trial training, the recipe
    and data of its model): a change re-runs the workers, which add only missing trials.
    """
    sweep = SWEEP.method()  # not which studies, their worker count or origin
    blocks = {"trial69": TRIAL69.as_dict(), "data": training_data_config(config)}
    recipe = {**_model_recipe(wildcards.model), **blocks}
    return json.dumps({"sweep": sweep, **recipe}, sort_keys=True)


def get_sweep_workers(wildcards):
    """The records of a study's `sweep.workers` workers."""
    return [
        f"{OUT}/sweep/{wildcards.model}/workers/{i}.json" for i in range(SWEEP.workers)
    ]


def get_sweep_outputs():
    """Targets of the `sweep` target rule, each study's trials, best overlay and plots."""
    return [f"{OUT}/sweep/{m}/{f}" for m in SWEEP.models for f in SWEEP_FILES]


# The reference is checked now, while parsing, so `snakemake -n` refuses a bad one with the
# ways forward. Later would be too late: Snakemake skips a failing input function when the
# job's outputs exist, which would hide a bad reference behind old results. Not checked in a
# job's own process (the main process did it) nor for a search alone (`snakemake sweep`, which
# never reads the reference). Snakemake gives the targets to the workflow only after parsing,
# so the command line is the one place they can be read from here.
_ARGV = sys.argv[1:]
_SWEEP_ONLY = "all" not in _ARGV and any(
    a == "sweep" or a.startswith(f"{OUT}/sweep/") for a in _ARGV
)
if workflow.is_main_process and not _SWEEP_ONLY:
    get_reference()
