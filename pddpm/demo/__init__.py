"""The demo cohort: raw-looking scans synthesised from real anatomy (nilearn's ICBM152 2009a)."""


def subject_ids(ds: str, n: int) -> list[str]:
    return [f"{ds}_{i:03d}" for i in range(n)]
