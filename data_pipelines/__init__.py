"""Data: the record schema, the synthetic talking-face dataset and the grain input pipelines."""
