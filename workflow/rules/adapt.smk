# Per-task adaptation (test-time training) as a fan-out: each adapted run (a model's seed, or
# the reference) is split into shards of `adapt.tasks_per_job` test tasks, one job each; a
# retried shard keeps the tasks it had answered (.state/adapt/...). The shard count comes from
# the prepared test set adapt.test_set (prepare_test is a checkpoint).


rule adapt:
    input:
        ckpt=get_adapt_checkpoint,
        data=ADAPT_DATA,
    output:
        **L.outputs("adapt"),
    log:
        L.log("adapt"),
    benchmark:
        L.benchmark("adapt")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_adapt_params,
        state=L.state("adapt"),
    script:
        "../scripts/adapt.py"


rule adapt_gather:
    input:
        shards=get_adapt_shards,
        data=ADAPT_DATA,
    output:
        **L.outputs("adapt_gather"),
    log:
        L.log("adapt_gather"),
    localrule: True
    conda:
        "../envs/arctax.yaml"
    params:
        label="{label}",
        tag="{tag}",
    script:
        "../scripts/adapt_gather.py"


rule compare_adapt:
    input:
        get_adapt_summaries,
    output:
        md=report(
            L.output("compare_adapt", "md"),
            caption="../report/adaptation.rst",
            category="5. Adaptation",
        ),
        csv=report(
            L.output("compare_adapt", "csv"),
            caption="../report/adaptation_csv.rst",
            category="5. Adaptation",
        ),
        gap=report(
            L.output("compare_adapt", "gap"),
            caption="../report/gap.rst",
            category="5. Adaptation",
        ),
        gap_png=report(
            L.output("compare_adapt", "gap_png"),
            caption="../report/gap_png.rst",
            category="5. Adaptation",
        ),
    log:
        L.log("compare_adapt"),
    benchmark:
        L.benchmark("compare_adapt")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval_dirs=L.adapt_eval_dirs(S, PLAN),
        adapt_dirs=L.adapt_dirs(PLAN.adapted),
        reference=REFERENCE,
    script:
        "../scripts/compare_adapt.py"


rule adapt_all:
    input:
        [
            L.output("adapt_gather", "adapt", label=label, tag=tag)
            for label, tag in PLAN.adapted
        ],
