"""Evaluation of anomaly maps (SPEC section 7): post-processing, threshold search, metrics, aggregation.

Pure functions on arrays; the workflow scripts only read and write files around them.
"""
