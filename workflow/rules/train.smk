# Each training waits for its own model's smoke test; `recipe` (this model's block, Trial 69,
# trainer, data) makes a changed setting re-run exactly the model it belongs to.


rule train:
    input:
        data=DATA_FILES,
        smoke=L.output("smoke_test", "report"),
    output:
        best=L.output("train", "best"),
        last=L.output("train", "last"),
        metrics=L.output("train", "metrics"),
        provenance=report(
            L.output("train", "provenance"),
            caption="../report/provenance.rst",
            category="3. Provenance",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
    log:
        L.log("train"),
    benchmark:
        L.benchmark("train")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_train_params,
        state=L.state("train"),
    script:
        "../scripts/train.py"


rule bootstrap_champion:
    input:
        data=DATA_FILES,
        smoke=L.output("smoke_test", "report", model="champion"),
    output:
        **L.outputs("bootstrap_champion"),
    log:
        L.log("bootstrap_champion"),
    benchmark:
        L.benchmark("bootstrap_champion")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_bootstrap_params,
        seed=S.champion.bootstrap_seed,
        state=L.state("bootstrap_champion"),
    script:
        "../scripts/bootstrap_champion.py"


# One target per model, whatever the config's models are: `snakemake train_<model>`.
for _model in MODELS:

    rule:
        name:
            f"train_{_model}"
        input:
            [L.output("train", "best", model=_model, seed=s) for s in SEEDS],
