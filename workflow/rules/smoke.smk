# One smoke job per model, so that changing one model's settings re-tests (and retrains)
# only that model; smoke_report gathers them into one table.


rule smoke_test:
    input:
        DATA_FILES,
    output:
        **L.outputs("smoke_test"),
    log:
        L.log("smoke_test"),
    benchmark:
        L.benchmark("smoke_test")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        recipe=get_train_params,
    script:
        "../scripts/smoke_test.py"


rule smoke_report:
    input:
        [L.output("smoke_test", "report", model=m) for m in MODELS],
    output:
        report=report(
            L.output("smoke_report", "report"),
            caption="../report/smoke.rst",
            category="1. Smoke test",
        ),
    log:
        L.log("smoke_report"),
    benchmark:
        L.benchmark("smoke_report")
    localrule: True
    conda:
        "../envs/arctax.yaml"
    script:
        "../scripts/smoke_report.py"
