# Per-task adaptation (test-time training) as a fan-out: each adapted run (a model's seed, or
# the reference) is split into shards of `adapt.tasks_per_job` test tasks, one job each; a
# retried shard keeps the tasks it had answered (.state/adapt/...). The shard count comes from
# the prepared test set adapt.test_set (prepare_test is a checkpoint).


rule adapt:
    input:
        ckpt=get_adapt_checkpoint,
        data=ADAPT_DATA,
    output:
        f"{OUT}/adapt/{{label}}/{{tag}}/shards/{{shard}}-of-{{n}}.json",
    log:
        f"{OUT}/logs/adapt/{{label}}/{{tag}}/{{shard}}-of-{{n}}.log",
    benchmark:
        f"{OUT}/benchmarks/adapt/{{label}}/{{tag}}/{{shard}}-of-{{n}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_adapt_params,
        state=f"{OUT}/.state/adapt/{{label}}/{{tag}}",
    script:
        "../scripts/adapt.py"


rule adapt_gather:
    input:
        shards=get_adapt_shards,
        data=ADAPT_DATA,
    output:
        base=f"{OUT}/base2/{{label}}/{{tag}}/summary.json",
        base_tasks=f"{OUT}/base2/{{label}}/{{tag}}/per_task.csv",
        base_submission=f"{OUT}/base2/{{label}}/{{tag}}/submission.json",
        vote=f"{OUT}/vote/{{label}}/{{tag}}/summary.json",
        vote_tasks=f"{OUT}/vote/{{label}}/{{tag}}/per_task.csv",
        vote_submission=f"{OUT}/vote/{{label}}/{{tag}}/submission.json",
        adapt=f"{OUT}/adapt/{{label}}/{{tag}}/summary.json",
        adapt_tasks=f"{OUT}/adapt/{{label}}/{{tag}}/per_task.csv",
        adapt_submission=f"{OUT}/adapt/{{label}}/{{tag}}/submission.json",
    log:
        f"{OUT}/logs/adapt/{{label}}/{{tag}}/gather.log",
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
            f"{OUT}/compare/adaptation.md",
            caption="../report/adaptation.rst",
            category="5. Adaptation",
        ),
        csv=report(
            f"{OUT}/compare/adaptation.csv",
            caption="../report/adaptation_csv.rst",
            category="5. Adaptation",
        ),
        gap=report(
            f"{OUT}/compare/gap.csv",
            caption="../report/gap.rst",
            category="5. Adaptation",
        ),
        gap_png=report(
            f"{OUT}/compare/gap.png",
            caption="../report/gap_png.rst",
            category="5. Adaptation",
        ),
    log:
        f"{OUT}/logs/compare_adapt.log",
    benchmark:
        f"{OUT}/benchmarks/compare_adapt.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval_dirs=get_adapt_eval_dirs(),
        adapt_dirs=get_adapt_dirs(),
        reference=REFERENCE,
    script:
        "../scripts/compare_adapt.py"


rule adapt_all:
    input:
        [f"{OUT}/adapt/{label}/{tag}/summary.json" for label, tag in adapted_runs()],
