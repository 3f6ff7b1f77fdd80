rule evaluate:
    input:
        ckpt=f"{OUT}/train/{{model}}/seed{{seed}}/best.ckpt",
        data=DATA_FILES,
    output:
        per_task=f"{OUT}/eval/{{model}}/seed{{seed}}/per_task.csv",
        summary=f"{OUT}/eval/{{model}}/seed{{seed}}/summary.json",
        predictions=f"{OUT}/eval/{{model}}/seed{{seed}}/predictions.json",
        submission=f"{OUT}/eval/{{model}}/seed{{seed}}/submission.json",
    log:
        f"{OUT}/logs/eval/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/eval/{{model}}/seed{{seed}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval=config["eval"],
        label="{model}",
        seed="{seed}",
    script:
        "../scripts/evaluate.py"


# The reference, whichever way it is given (champion.checkpoint / bootstrap / predictions /
# adapter; resolved and checked in common.smk): the same outputs as every model's evaluation.
rule evaluate_reference:
    input:
        ref=get_reference_input,
        data=DATA_FILES,
    output:
        per_task=f"{OUT}/eval/{REFERENCE}/per_task.csv",
        summary=f"{OUT}/eval/{REFERENCE}/summary.json",
        predictions=f"{OUT}/eval/{REFERENCE}/predictions.json",
        submission=f"{OUT}/eval/{REFERENCE}/submission.json",
    log:
        f"{OUT}/logs/eval/{REFERENCE}.log",
    benchmark:
        f"{OUT}/benchmarks/eval/{REFERENCE}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval=config["eval"],
        label=REFERENCE,
        reference=get_reference_params,
    script:
        "../scripts/evaluate_reference.py"


rule compare:
    input:
        evals=get_eval_summaries,
        provenance=get_provenance,
    output:
        summary_md=report(
            f"{OUT}/compare/summary.md",
            caption="../report/summary.rst",
            category="2. Comparison",
        ),
        summary_csv=report(
            f"{OUT}/compare/summary.csv",
            caption="../report/summary_csv.rst",
            category="2. Comparison",
        ),
        per_category=report(
            f"{OUT}/compare/per_category.csv",
            caption="../report/per_category.rst",
            category="2. Comparison",
        ),
        audit=report(
            f"{OUT}/compare/audit.csv",
            caption="../report/audit.rst",
            category="3. Provenance",
        ),
        curves=report(
            f"{OUT}/compare/curves.png",
            caption="../report/curves.rst",
            category="4. Figures",
        ),
        accuracy=report(
            f"{OUT}/compare/accuracy.png",
            caption="../report/accuracy.rst",
            category="4. Figures",
        ),
        categories=report(
            f"{OUT}/compare/categories.png",
            caption="../report/categories.rst",
            category="4. Figures",
        ),
        gallery=report(
            f"{OUT}/compare/gallery.png",
            caption="../report/gallery.rst",
            category="4. Figures",
        ),
    log:
        f"{OUT}/logs/compare.log",
    benchmark:
        f"{OUT}/benchmarks/compare.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval_dirs=get_eval_dirs(),
        train_dirs=expand(
            f"{OUT}/train/{{model}}/seed{{seed}}", model=MODELS, seed=SEEDS
        ),
        reference=REFERENCE,
    script:
        "../scripts/compare.py"


# One target per model, whatever the config's models are: `snakemake evaluate_<model>`.
for _model in MODELS:

    rule:
        name:
            f"evaluate_{_model}"
        input:
            expand(f"{OUT}/eval/{_model}/seed{{seed}}/summary.json", seed=SEEDS),


rule evaluate_reference_only:
    input:
        f"{OUT}/eval/{REFERENCE}/summary.json",
