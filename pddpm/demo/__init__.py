"""The demo cohort: raw-looking scans synthesised from real anatomy (nilearn's ICBM152 2009a).

`anatomy` holds the template on the atlas and reference grids, `fields` the random pose, warp, bias and
noise, `lesions` tumours and MS lesions, `cohort` one subject end to end."""


def subject_ids(ds: str, n: int) -> list[str]:
    return [f"{ds}_{i:03d}" for i in range(n)]


def subject_index(ds: str, sub: str) -> int:
    """Inverse of subject_ids: '{ds}_007' -> 7, with a clear error for anything else."""
    prefix = f"{ds}_"
    tail = sub[len(prefix):] if sub.startswith(prefix) else ""
    if not (len(tail) >= 3 and tail.isdigit()):
        raise ValueError(f"'{sub}' is not a demo subject id of data set '{ds}' (expected {ds}_NNN)")
    return int(tail)
