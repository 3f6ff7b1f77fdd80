rule smoke_test:
    input:
        DATA_FILES,
    output:
        report(
            f"{OUT}/smoke/report.json",
            caption="../report/smoke.rst",
            category="1. Smoke test",
        ),
    log:
        f"{OUT}/logs/smoke_test.log",
    benchmark:
        f"{OUT}/benchmarks/smoke_test.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        models=config["models"],
        trial69=config["trial69"],
    script:
        "../scripts/smoke_test.py"
