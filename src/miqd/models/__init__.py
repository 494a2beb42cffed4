"""The label ensemble: registry, backends and batched inference (stage 4)."""
