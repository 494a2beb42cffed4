# Stage 4, infer: every registry model on every image of its task, one job per (task, shard, group).


rule infer:
    input:
        unpack(infer_inputs),
    output:
        layout.infer_index(OUTDIR, "{task}", "{group}", "{shard}"),
    params:
        config=lambda wildcards: miqd.config.stage_json(config, "infer"),
        models=group_models,
    log:
        layout.log_path(OUTDIR, "infer", "{task}-{group}-{shard}"),
    benchmark:
        layout.benchmark_path(OUTDIR, "infer", "{task}-{group}-{shard}"),
    threads: config["infer"]["threads"]
    resources:
        mem_mb=config["infer"]["resources"]["mem_mb"],
        runtime=config["infer"]["resources"]["runtime"],
        workers=config["infer"]["workers"],  # decode processes: how it runs, not what it computes
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd infer --config {params.config:q} --models {params.models:q} --task {wildcards.task}"
        " --group {wildcards.group} --shard {wildcards.shard} --sources {input.sources}"
        " --manifest {input.manifest} --out {output} --workers {resources.workers} --threads {threads}"
        " > {log} 2>&1"
