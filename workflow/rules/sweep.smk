# Hyper-parameter search: `snakemake sweep`. Per model in sweep.models, sweep.workers jobs
# draw trials from one shared Optuna study (results/<run>/sweep/<model>/study.log, or the
# database in $ARCTAX_OPTUNA_STORAGE) until it has sweep.n_trials finished trials; then one
# local job writes trials.csv, best.yaml and the plots. The study is not a declared output:
# Snakemake never deletes it, so re-running workers (changed n_trials) only adds trials.


wildcard_constraints:
    worker=r"\d+",


rule sweep_worker:
    input:
        data=DATA_FILES,
    output:
        **L.outputs("sweep_worker"),
    log:
        L.log("sweep_worker"),
    benchmark:
        L.benchmark("sweep_worker")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        study=get_sweep_params,
        sweep_dir=L.folder("sweep_report"),
        state=L.state("sweep_worker"),
    script:
        "../scripts/sweep_worker.py"


rule sweep_report:
    input:
        workers=get_sweep_workers,
    output:
        trials=report(
            L.output("sweep_report", "trials"),
            caption="../report/sweep_trials.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        best=report(
            L.output("sweep_report", "best"),
            caption="../report/sweep_best.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        history=report(
            L.output("sweep_report", "history"),
            caption="../report/sweep_history.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        importances=report(
            L.output("sweep_report", "importances"),
            caption="../report/sweep_importances.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        parallel=report(
            L.output("sweep_report", "parallel"),
            caption="../report/sweep_parallel.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
    log:
        L.log("sweep_report"),
    benchmark:
        L.benchmark("sweep_report")
    localrule: True
    conda:
        "../envs/arctax.yaml"
    params:
        study=get_sweep_params,
        sweep_dir=L.folder("sweep_report"),
    script:
        "../scripts/sweep_report.py"


rule sweep:
    input:
        L.sweep_targets(S),
