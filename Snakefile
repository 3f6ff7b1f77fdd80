# arctax: train and fairly compare three ARC transformers (Trial 69 champion vs ablations).
# A table of contents; the logic lives in workflow/rules and src/arctax.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/driver.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/orphans.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/smoke.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/adapt.smk"
include: "workflow/rules/sweep.smk"


rule all:
    default_target: True
    input:
        L.targets(PLAN),
