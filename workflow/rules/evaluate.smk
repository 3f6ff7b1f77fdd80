# Every model and the reference are evaluated on each test set (data.test_sets), each test set
# compared and reported on its own: results/<run>/{eval,compare}/<test set>/.


rule evaluate:
    input:
        ckpt=f"{OUT}/train/{{model}}/seed{{seed}}/best.ckpt",
        data=get_test_set_files,
    output:
        per_task=f"{OUT}/eval/{{test_set}}/{{model}}/seed{{seed}}/per_task.csv",
        summary=f"{OUT}/eval/{{test_set}}/{{model}}/seed{{seed}}/summary.json",
        predictions=f"{OUT}/eval/{{test_set}}/{{model}}/seed{{seed}}/predictions.json",
        submission=f"{OUT}/eval/{{test_set}}/{{model}}/seed{{seed}}/submission.json",
    log:
        f"{OUT}/logs/eval/{{test_set}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/eval/{{test_set}}/{{model}}/seed{{seed}}.tsv"
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
        data=get_test_set_files,
    output:
        per_task=f"{OUT}/eval/{{test_set}}/{REFERENCE}/per_task.csv",
        summary=f"{OUT}/eval/{{test_set}}/{REFERENCE}/summary.json",
        predictions=f"{OUT}/eval/{{test_set}}/{REFERENCE}/predictions.json",
        submission=f"{OUT}/eval/{{test_set}}/{REFERENCE}/submission.json",
    log:
        f"{OUT}/logs/eval/{{test_set}}/{REFERENCE}.log",
    benchmark:
        f"{OUT}/benchmarks/eval/{{test_set}}/{REFERENCE}.tsv"
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
            f"{OUT}/compare/{{test_set}}/summary.md",
            caption="../report/summary.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        summary_csv=report(
            f"{OUT}/compare/{{test_set}}/summary.csv",
            caption="../report/summary_csv.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        summary_json=f"{OUT}/compare/{{test_set}}/summary.json",
        per_category=report(
            f"{OUT}/compare/{{test_set}}/per_category.csv",
            caption="../report/per_category.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        paired=report(
            f"{OUT}/compare/{{test_set}}/paired.csv",
            caption="../report/paired.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        audit=report(
            f"{OUT}/compare/{{test_set}}/audit.csv",
            caption="../report/audit.rst",
            category="3. Provenance",
            subcategory="{test_set}",
        ),
        curves=report(
            f"{OUT}/compare/{{test_set}}/curves.png",
            caption="../report/curves.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
        accuracy=report(
            f"{OUT}/compare/{{test_set}}/accuracy.png",
            caption="../report/accuracy.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
        categories=report(
            f"{OUT}/compare/{{test_set}}/categories.png",
            caption="../report/categories.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
        gallery=report(
            f"{OUT}/compare/{{test_set}}/gallery.png",
            caption="../report/gallery.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
    log:
        f"{OUT}/logs/compare/{{test_set}}.log",
    benchmark:
        f"{OUT}/benchmarks/compare/{{test_set}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval_dirs=get_eval_dirs,
        train_dirs=expand(
            f"{OUT}/train/{{model}}/seed{{seed}}", model=MODELS, seed=SEEDS
        ),
        reference=REFERENCE,
        adaptation=bool(adapted_runs()),
        test_source=get_test_source,
    script:
        "../scripts/compare.py"


# One target per model, whatever the config's models are: `snakemake evaluate_<model>`
# (every test set).
for _model in MODELS:

    rule:
        name:
            f"evaluate_{_model}"
        input:
            expand(
                f"{OUT}/eval/{{test_set}}/{_model}/seed{{seed}}/summary.json",
                test_set=TEST_SETS,
                seed=SEEDS,
            ),


rule evaluate_reference_only:
    input:
        expand(f"{OUT}/eval/{{test_set}}/{REFERENCE}/summary.json", test_set=TEST_SETS),
