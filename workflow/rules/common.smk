# Config validation, shared names and every input/param function of the workflow.
import json
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from arctax.config import ConfigError, coerce_to_schema, fill_defaults, validate_config
from arctax.evaluation.reference import ReferenceError, resolve_reference

# `--config key=[1,2]` / `key={"a": 3}` arrive as strings: read THOSE as the schema's types.
# Values from config files are never converted: a "32" there is an error naming the key.
update_config(config, coerce_to_schema(dict(workflow.config_settings.config)))
try:
    validate_config(config)  # config/config.schema.yaml; one line naming the key
except ConfigError as e:
    raise WorkflowError(f"{e}\n(the keys are documented in config/README.md)") from None
fill_defaults(config)
try:
    # the champion reference is checked now, so `snakemake -n` already refuses a bad one
    REF = resolve_reference(config["champion"])
except ReferenceError as e:
    raise WorkflowError(str(e)) from None

MODELS = ["champion", "encoder_decoder", "decoder_only"]
REFERENCE = "champion_bootstrap"  # label of the champion reference in every table
RUN = config["run"]
OUT = f"results/{RUN}"
DATA = f"{OUT}/data"
DATA_FILES = [f"{DATA}/{s}.npz" for s in ("train", "val", "test")] + [
    f"{DATA}/manifest.json"
]
SEEDS = config["seeds"]
BOOTSTRAP_CKPT = f"{OUT}/bootstrap/champion_bootstrap.ckpt"
COMPARE_FILES = [
    "summary.md",
    "summary.csv",
    "per_category.csv",
    "audit.csv",
    "curves.png",
    "accuracy.png",
    "categories.png",
    "gallery.png",
]


wildcard_constraints:
    model="|".join(MODELS),
    seed=r"\d+",


def get_reference_input(wildcards):
    """The file the reference's evaluation reads: the user's checkpoint (read only), the one
    bootstrapped here, the predictions file, or the checkpoint an adapter loads."""
    return BOOTSTRAP_CKPT if REF.way == "bootstrap" else REF.path


def _recipe(model):
    # a JSON string, not a dict: Snakemake iterates a dict returned by a param function
    # (keeping only its keys), which would hide a changed value from the params trigger
    blocks = {k: config[k] for k in ("trial69", "trainer", "data")}
    return json.dumps({"model": config["models"][model], **blocks}, sort_keys=True)


def get_train_params(wildcards):
    """What a training run depends on: its model's block, Trial 69, trainer and data."""
    return _recipe(wildcards.model)


def get_bootstrap_params(wildcards):
    """The bootstrapped reference is the champion architecture under Trial 69."""
    return _recipe("champion")


def get_eval_dirs(wildcards=None):
    """Evaluation folders by label: each model's seeds, and the champion reference."""
    dirs = {m: [f"{OUT}/eval/{m}/seed{s}" for s in SEEDS] for m in MODELS}
    dirs[REFERENCE] = [f"{OUT}/eval/{REFERENCE}"]
    return dirs


def get_eval_summaries(wildcards):
    """Every evaluation summary the comparison reads."""
    return [f"{d}/summary.json" for ds in get_eval_dirs().values() for d in ds]


def get_provenance(wildcards):
    """Provenance of every trained run (the audit table reads them)."""
    return expand(
        f"{OUT}/train/{{model}}/seed{{seed}}/provenance.json", model=MODELS, seed=SEEDS
    )


def get_final_outputs():
    """Targets of `rule all`."""
    return [f"{OUT}/smoke/report.json"] + [f"{OUT}/compare/{f}" for f in COMPARE_FILES]
