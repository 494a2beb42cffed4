# Stage 7, split: train/val by source image, stratified (paper §6.1), one job per dataset
# (det and ins share the coco split); with a class-balance report and the upstream CSV formats.
# One rule per dataset: the upstream files are named after the task (miqa_cls_*.csv, miqa_det_*.csv).
for _dataset in DATASETS:

    rule:
        name:
            f"split_{_dataset}"
        input:
            [layout.select_table(OUTDIR, _dataset, s) for s in shards(_dataset)],
        output:
            table=layout.split_table(OUTDIR, _dataset),
            balance=layout.split_balance(OUTDIR, _dataset),
            train=layout.split_upstream(OUTDIR, _dataset)["train"],
            val=layout.split_upstream(OUTDIR, _dataset)["val"],
        params:
            config=miqd.config.stage_json(config, "split"),
            dataset=_dataset,
        log:
            layout.log_path(OUTDIR, "split", _dataset),
        resources:
            mem_mb=config["split"]["resources"]["mem_mb"],
            runtime=config["split"]["resources"]["runtime"],
        conda:
            "../envs/miqd.yaml"
        shell:
            "miqd split --config {params.config:q} --dataset {params.dataset} --out {output.table}"
            " --balance {output.balance} --upstream-train {output.train} --upstream-val {output.val}"
            " {input} > {log} 2>&1"
