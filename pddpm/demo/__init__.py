"""The demo cohort: raw-looking scans synthesised from real anatomy (nilearn's ICBM152 2009a).

`anatomy` holds the template on the atlas and reference grids, `fields` the random pose, warp, bias and
noise, `lesions` tumours and MS lesions, `cohort` one subject end to end."""


# Bump when a change to the generator changes the subjects it makes: it is a param of the demo rules,
# so existing cohorts are regenerated instead of silently mixing two versions.
GENERATOR_VERSION = 2  # 2: skull base and neck tissues under the brain (was a brain-grey block)


def subject_ids(ds: str, n: int) -> list[str]:
    return [f"{ds}_{i:03d}" for i in range(n)]


def subject_index(ds: str, sub: str) -> int:
    """Inverse of subject_ids: '{ds}_007' -> 7, with a clear error for anything else."""
    prefix = f"{ds}_"
    tail = sub[len(prefix):] if sub.startswith(prefix) else ""
    if not (len(tail) >= 3 and tail.isdigit()):
        raise ValueError(f"'{sub}' is not a demo subject id of data set '{ds}' (expected {ds}_NNN)")
    return int(tail)


# the generator follows `kind`; a role that contradicts the kind's labels is a config mistake
KIND_ROLES = {"ixi": "healthy", "brats": "anomalous", "mslub": "anomalous"}


def check_datasets(datasets: dict) -> list[str]:
    """The demo data sets of a config's `datasets`, after checking each is generatable."""
    from pddpm.errors import PddpmConfigError

    demo = [ds for ds, cfg in datasets.items() if cfg["source"] == "demo"]
    for ds in demo:
        cfg = datasets[ds]
        role = KIND_ROLES[cfg["kind"]]
        if cfg["role"] != role:
            raise PddpmConfigError(f"datasets.{ds}: a demo data set of kind '{cfg['kind']}' is {role}; "
                                   f"set role: {role}")
        if "n_subjects" not in cfg:
            raise PddpmConfigError(f"datasets.{ds}: source demo needs n_subjects (how many to synthesise)")
    return demo


def raw_files(ds: str, subjects: list[str], anomalous: bool) -> list[str]:
    """The raw files of a demo data set that subjects.tsv lists: scans, and labels if anomalous."""
    files = [f"data/raw/{ds}/{sub}_t2.nii.gz" for sub in subjects]
    if anomalous:
        files += [f"data/raw/{ds}/{sub}_seg.nii.gz" for sub in subjects]
    return files
