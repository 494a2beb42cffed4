# miqd: build MIQD-2.5M (or the embedded demo) and, stage by stage, everything derived from it.
# The default config is the embedded demo; the full database: --configfile config/miqd25m.yaml
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/select.smk"
include: "rules/roi.smk"
include: "rules/distort.smk"


rule all:
    input:
        all_targets(),
    default_target: True
