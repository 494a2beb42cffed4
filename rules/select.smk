# Stage 1, select: the candidates of each shard, their NR-IQA scores, and which become sources.
# Weight files are checked when a job runs (not inputs), so a plan needs no weights.


# The embedded demo's photos are written out of their packages by a rule, once per demo set.
for _dataset, _src in config["sources"].items():
    if "materialize" in _src:

        rule:
            name:
                f"demo_sources_{_dataset}"
            input:
                spec=_src["materialize"],
            output:
                directory(_src["images"]),
            log:
                layout.log_path(OUTDIR, "demo_sources", _dataset),
            conda:
                "../envs/miqd.yaml"
            shell:
                "miqd demo-sources --spec {input.spec} --out {output} > {log} 2>&1"


rule select:
    input:
        unpack(select_inputs),
    output:
        layout.select_table(OUTDIR, "{dataset}", "{shard}"),
    params:
        config=stage_params("select"),
    log:
        layout.log_path(OUTDIR, "select", "{dataset}-{shard}"),
    threads: lambda wildcards: config["select"][wildcards.dataset]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd select --config {params.config:q} --dataset {wildcards.dataset}"
        " --shard {wildcards.shard} --out {output} --threads {threads} > {log} 2>&1"
