# Each training waits for its own model's smoke test; `recipe` (this model's block, Trial 69,
# trainer, data) makes a changed setting re-run exactly the model it belongs to.


rule train:
    input:
        data=DATA_FILES,
        smoke=f"{OUT}/smoke/{{model}}.json",
    output:
        best=f"{OUT}/train/{{model}}/seed{{seed}}/best.ckpt",
        last=f"{OUT}/train/{{model}}/seed{{seed}}/last.ckpt",
        metrics=f"{OUT}/train/{{model}}/seed{{seed}}/metrics.csv",
        provenance=report(
            f"{OUT}/train/{{model}}/seed{{seed}}/provenance.json",
            caption="../report/provenance.rst",
            category="3. Provenance",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
    log:
        f"{OUT}/logs/train/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{model}}/seed{{seed}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_train_params,
        state=f"{OUT}/.state/train/{{model}}/seed{{seed}}",
    script:
        "../scripts/train.py"


rule bootstrap_champion:
    input:
        data=DATA_FILES,
        smoke=f"{OUT}/smoke/champion.json",
    output:
        best=BOOTSTRAP_CKPT,
        provenance=f"{OUT}/bootstrap/provenance.json",
    log:
        f"{OUT}/logs/bootstrap_champion.log",
    benchmark:
        f"{OUT}/benchmarks/bootstrap_champion.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_bootstrap_params,
        seed=Champion.of(config).bootstrap_seed,
        state=f"{OUT}/.state/bootstrap",
    script:
        "../scripts/bootstrap_champion.py"


# One target per model, whatever the config's models are: `snakemake train_<model>`.
for _model in MODELS:

    rule:
        name:
            f"train_{_model}"
        input:
            expand(f"{OUT}/train/{_model}/seed{{seed}}/best.ckpt", seed=SEEDS),
