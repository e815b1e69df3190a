"""Evaluation of anomaly maps (docs/spec.md section 7): post-processing, threshold search, metrics, aggregation.

Pure functions on arrays; the workflow scripts only read and write files around them.
"""
