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
        record=f"{OUT}/sweep/{{model}}/workers/{{worker}}.json",
    log:
        f"{OUT}/logs/sweep/{{model}}/worker{{worker}}.log",
    benchmark:
        f"{OUT}/benchmarks/sweep/{{model}}/worker{{worker}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        study=get_sweep_params,
        sweep_dir=f"{OUT}/sweep/{{model}}",
        state=f"{OUT}/.state/sweep/{{model}}",
    script:
        "../scripts/sweep_worker.py"


rule sweep_report:
    input:
        workers=get_sweep_workers,
    output:
        trials=report(
            f"{OUT}/sweep/{{model}}/trials.csv",
            caption="../report/sweep_trials.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        best=report(
            f"{OUT}/sweep/{{model}}/best.yaml",
            caption="../report/sweep_best.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        history=report(
            f"{OUT}/sweep/{{model}}/history.png",
            caption="../report/sweep_history.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        importances=report(
            f"{OUT}/sweep/{{model}}/importances.png",
            caption="../report/sweep_importances.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
        parallel=report(
            f"{OUT}/sweep/{{model}}/parallel.png",
            caption="../report/sweep_parallel.rst",
            category="6. Hyper-parameter search",
            subcategory="{model}",
        ),
    log:
        f"{OUT}/logs/sweep/{{model}}/report.log",
    benchmark:
        f"{OUT}/benchmarks/sweep/{{model}}/report.tsv"
    localrule: True
    conda:
        "../envs/arctax.yaml"
    params:
        study=get_sweep_params,
        sweep_dir=f"{OUT}/sweep/{{model}}",
    script:
        "../scripts/sweep_report.py"


rule sweep:
    input:
        get_sweep_outputs(),
