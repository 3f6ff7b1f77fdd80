# One smoke job per model, so that changing one model's settings re-tests (and retrains)
# only that model; smoke_report gathers them into one table.


rule smoke_test:
    input:
        DATA_FILES,
    output:
        f"{OUT}/smoke/{{model}}.json",
    log:
        f"{OUT}/logs/smoke_test/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/smoke_test/{{model}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_train_params,
    script:
        "../scripts/smoke_test.py"


rule smoke_report:
    input:
        expand(f"{OUT}/smoke/{{model}}.json", model=MODELS),
    output:
        report(
            f"{OUT}/smoke/report.json",
            caption="../report/smoke.rst",
            category="1. Smoke test",
        ),
    log:
        f"{OUT}/logs/smoke_report.log",
    benchmark:
        f"{OUT}/benchmarks/smoke_report.tsv"
    localrule: True
    conda:
        "../envs/arctax.yaml"
    script:
        "../scripts/smoke_report.py"
