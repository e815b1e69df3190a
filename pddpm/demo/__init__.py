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
    """The demo data sets of a config's `datasets`, after the checks the workflow runs on them
    (pddpm.config_checks: the schema, and a role that matches the kind)."""
    from pddpm.config_checks import dataset_problems
    from pddpm.errors import PddpmConfigError

    demo = {ds: cfg for ds, cfg in datasets.items() if cfg.get("source") == "demo"}
    problems = dataset_problems(demo)
    if problems:
        raise PddpmConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return list(demo)
