# miqd: build MIQD-2.5M (or the embedded demo) and, stage by stage, everything derived from it.
# Default config: the embedded demo. Full database: --configfile config/miqd25m.yaml
from snakemake.utils import min_version

min_version("9.0")


# The embedded demo is the default. A --configfile replaces it instead of being merged into it,
# so no demo key (e.g. `materialize`) can leak into a full-scale run.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/select.smk"
include: "rules/roi.smk"
include: "rules/distort.smk"
include: "rules/infer.smk"
include: "rules/label.smk"
include: "rules/validate.smk"
include: "rules/split.smk"
include: "rules/train.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True


# stage targets: `snakemake distorted` stops after the distort stage
rule distorted:
    input:
        distort_targets(),


rule predicted:
    input:
        infer_targets() + seal_targets(),


rule labelled:
    input:
        label_targets() + split_targets() + seal_targets(),


rule trained:
    input:
        train_targets() + seal_targets(),
