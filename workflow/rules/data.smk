# The training data (prepare_data) and each test set (prepare_test, a checkpoint: the
# adaptation stage plans its shards from a test set's size) are prepared apart, so adding or
# changing a test set never re-runs a training. With data.source: rearc the source is generated
# first from the user's re-arc checkout: one CPU job per shard of data.rearc.tasks_per_job tasks
# (each task seeded alone and kept once made: a retried job resumes), then gathered.


rule generate_rearc:
    output:
        **L.outputs("generate_rearc"),
    log:
        L.log("generate_rearc"),
    benchmark:
        L.benchmark("generate_rearc")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        shard=get_rearc_params,
        state=L.state("generate_rearc"),
    script:
        "../scripts/generate_rearc.py"


rule rearc_gather:
    input:
        REARC_SHARDS,
    output:
        directory(L.output("rearc_gather", "folder")),
    log:
        L.log("rearc_gather"),
    localrule: True
    conda:
        "../envs/arctax.yaml"
    params:
        state=L.state("rearc_gather"),
    script:
        "../scripts/rearc_gather.py"


rule prepare_data:
    input:
        get_training_source,
    output:
        **L.outputs("prepare_data"),
    log:
        L.log("prepare_data"),
    benchmark:
        L.benchmark("prepare_data")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        data=get_training_data_params,
    script:
        "../scripts/prepare_data.py"


checkpoint prepare_test:
    input:
        unpack(get_prepare_test_inputs),
    output:
        **L.outputs("prepare_test"),
    log:
        L.log("prepare_test"),
    benchmark:
        L.benchmark("prepare_test")
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        test_set=get_test_set_params,
    script:
        "../scripts/prepare_test.py"
