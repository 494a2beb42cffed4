"""miqd: build machine-centric image-quality databases (MIQD-2.5M) with one Snakemake workflow."""

__version__ = "0.1.0"
