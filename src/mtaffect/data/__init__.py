"""Data layer: native readers → frame records → frame index → face cache → task sets → batches."""
