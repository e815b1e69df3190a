"""Per-subject preprocessing (docs/spec.md section 2): resample -> skull strip -> register -> crop -> N4, and QC.

Each module holds pure functions on nibabel images or paths; `workflow_scripts/*.py` wire them to rules.
"""
