"""Data as the pipeline reads it: the structure of inputs and outputs (data.structure) and
splits read in batches (data.split)."""
