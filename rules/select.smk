# Stage 1, select: the candidates of each shard and which of them become sources.


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
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd select --config {params.config:q} --dataset {wildcards.dataset}"
        " --shard {wildcards.shard} --out {output} > {log} 2>&1"
