# Config validation, shared names and every input/param function of the workflow.
import json
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from arctax.config import coerce_to_schema

# --config key=[1,2] / key={"a": 3} arrive as strings: read them as the schema's types
config.update(coerce_to_schema(config))
validate(config, schema="../schemas/config.schema.yaml")

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


def reference_is_bootstrapped():
    """True when the champion reference is trained here (the user's file is absent)."""
    path = config["champion"]["checkpoint"]
    if os.path.exists(path):
        return False
    if config["champion"]["bootstrap"]:
        return True
    raise WorkflowError(
        f"config key 'champion.checkpoint' points at '{path}', which does not exist. "
        "Put your champion_bootstrap.ckpt there (or pass --config champion.checkpoint=PATH), "
        "or set champion.bootstrap: true to train a stand-in here (labelled as such)."
    )


def get_reference_checkpoint(wildcards):
    """The user's champion checkpoint (read only), or the one bootstrapped here."""
    if reference_is_bootstrapped():
        return BOOTSTRAP_CKPT
    return config["champion"]["checkpoint"]


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
