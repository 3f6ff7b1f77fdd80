# Every model and the reference are evaluated on each test set (data.test_sets), each test set
# compared and reported on its own: results/<run>/{eval,compare}/<test set>/.


rule evaluate:
    input:
        ckpt=L.output("train", "best"),
        data=get_test_set_files,
    output:
        **L.outputs("evaluate"),
    log:
        L.log("evaluate"),
    benchmark:
        L.benchmark("evaluate")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval=config["eval"],  # the block as given: its key order is what the trigger compares
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
        **L.outputs("evaluate_reference"),
    log:
        L.log("evaluate_reference"),
    benchmark:
        L.benchmark("evaluate_reference")
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
            L.output("compare", "summary_md"),
            caption="../report/summary.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        summary_csv=report(
            L.output("compare", "summary_csv"),
            caption="../report/summary_csv.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        summary_json=L.output("compare", "summary_json"),
        per_category=report(
            L.output("compare", "per_category"),
            caption="../report/per_category.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        paired=report(
            L.output("compare", "paired"),
            caption="../report/paired.rst",
            category="2. Comparison",
            subcategory="{test_set}",
        ),
        audit=report(
            L.output("compare", "audit"),
            caption="../report/audit.rst",
            category="3. Provenance",
            subcategory="{test_set}",
        ),
        curves=report(
            L.output("compare", "curves"),
            caption="../report/curves.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
        accuracy=report(
            L.output("compare", "accuracy"),
            caption="../report/accuracy.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
        categories=report(
            L.output("compare", "categories"),
            caption="../report/categories.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
        gallery=report(
            L.output("compare", "gallery"),
            caption="../report/gallery.rst",
            category="4. Figures",
            subcategory="{test_set}",
        ),
    log:
        L.log("compare"),
    benchmark:
        L.benchmark("compare")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        eval_dirs=get_eval_dirs,
        train_dirs=[L.folder("train", model=m, seed=s) for m in MODELS for s in SEEDS],
        reference=REFERENCE,
        adaptation=bool(PLAN.adapted),
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
            [
                L.output("evaluate", "summary", test_set=t, model=_model, seed=s)
                for t in TEST_SETS
                for s in SEEDS
            ],


rule evaluate_reference_only:
    input:
        [L.output("evaluate_reference", "summary", test_set=t) for t in TEST_SETS],
