"""Real data in: downloads (download.py), archives (archives.py), the per-source converters (ixi.py,
mslub.py, brats.py, sri24.py), local folders (local.py) and the authors' preprocessed layout
(preprocessed_layout.py). Every source ends as `data/raw/{ds}/{sub}_t2.nii.gz` (+ `_seg`) and
`subjects.tsv` (raw.py), the same contract as the demo cohort."""
