# The training data (prepare_data) and each test set (prepare_test, a checkpoint: the
# adaptation stage plans its shards from a test set's size) are prepared apart, so adding or
# changing a test set never re-runs a training. With data.source: rearc the source is generated
# first from the user's re-arc checkout: one CPU job per shard of data.rearc.tasks_per_job tasks
# (each task seeded alone and kept once made: a retried job resumes), then gathered.


rule generate_rearc:
    output:
        f"{OUT}/rearc/shards/{{shard}}-of-{{n}}.json",
    log:
        f"{OUT}/logs/generate_rearc/{{shard}}-of-{{n}}.log",
    benchmark:
        f"{OUT}/benchmarks/generate_rearc/{{shard}}-of-{{n}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        shard=get_rearc_params,
        state=f"{OUT}/.state/rearc",
    script:
        "../scripts/generate_rearc.py"


rule rearc_gather:
    input:
        REARC_SHARDS,
    output:
        directory(REARC_DIR),
    log:
        f"{OUT}/logs/rearc_gather.log",
    localrule: True
    conda:
        "../envs/arctax.yaml"
    params:
        state=f"{OUT}/.state/rearc",
    script:
        "../scripts/rearc_gather.py"


rule prepare_data:
    input:
        get_training_source,
    output:
        train=f"{DATA}/train.npz",
        val=f"{DATA}/val.npz",
        manifest=f"{DATA}/manifest.json",
    log:
        f"{OUT}/logs/prepare_data.log",
    benchmark:
        f"{OUT}/benchmarks/prepare_data.tsv"
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
        test=f"{DATA}/test/{{test_set}}/test.npz",
        manifest=f"{DATA}/test/{{test_set}}/manifest.json",
    log:
        f"{OUT}/logs/prepare_test/{{test_set}}.log",
    benchmark:
        f"{OUT}/benchmarks/prepare_test/{{test_set}}.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        test_set=get_test_set_params,
    script:
        "../scripts/prepare_test.py"
