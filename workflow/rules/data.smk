# A checkpoint: the adaptation stage plans its shards from the prepared test split's size.
checkpoint prepare_data:
    output:
        train=f"{DATA}/train.npz",
        val=f"{DATA}/val.npz",
        test=f"{DATA}/test.npz",
        manifest=f"{DATA}/manifest.json",
    log:
        f"{OUT}/logs/prepare_data.log",
    benchmark:
        f"{OUT}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/arctax.yaml"
    threads: 1
    params:
        data=config["data"],
        taxonomy=config["taxonomy"],
    script:
        "../scripts/prepare_data.py"
