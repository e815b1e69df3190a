# Raw data in: downloads with hashes, local folders, the authors' preprocessed layout (docs/real-data.md).
# Every source ends as data/raw/{ds}/{sub}_t2.nii.gz (+ _seg) and data/raw/{ds}/subjects.tsv, like the
# demo; the preprocessed layout is read in place and enters at slicing (preprocessed_layout_files).


include: "helpers/data.smk"


DOWNLOAD_DS = _datasets_of("download")


LOCAL_DS = _datasets_of("local")


DOWNLOADS = config["downloads"]


DL_DIR = "data/downloads"


# model weights fetched once per working directory, unpacked where the skull-strip jobs read them
HDBET_DIR = "resources/weights/hdbet_v2"


for _ds in DOWNLOAD_DS:
    if ds_cfg(_ds)["kind"] == "brats":
        raise WorkflowError(
            f"datasets.{_ds}: BraTS 2021 cannot be downloaded (registration required); "
            f"use source: local.\n{data_brats.HOW_TO}"
        )


# Every file this run downloads, `source/file`. A download data set's files come from the source named
# like its kind; the authors' sheets only those of the data sets they split.
NEEDED_DOWNLOADS = [
    f"{ds_cfg(ds)['kind']}/{f}" for ds in DOWNLOAD_DS for f in _source_files(ds_cfg(ds)["kind"])
]
# the atlas only where some data set is registered (the authors' preprocessed layout is not)
if config["atlas"]["source"] == "sri24" and any(ds_cfg(ds)["source"] != "preprocessed" for ds in DATASETS):
    NEEDED_DOWNLOADS += [f"sri24/{f}" for f in _source_files("sri24")]
if hdbet_download_needed():
    NEEDED_DOWNLOADS += [f"hdbet_v2/{f}" for f in _source_files("hdbet_v2")]
NEEDED_DOWNLOADS += [
    p.removeprefix(f"{DL_DIR}/") for ds in DATASETS for p in authors_sheet_downloads(ds).values()
]
NEEDED_DOWNLOADS = sorted(set(NEEDED_DOWNLOADS))
DOWNLOAD_SOURCES = sorted({k.split("/")[0] for k in NEEDED_DOWNLOADS})


# fail before any job runs when a needed file has no known URL and is not on disk either
_NO_URL = [
    k
    for k in NEEDED_DOWNLOADS
    if not _source_files(k.split("/")[0])[k.split("/", 1)[1]]["url"] and not os.path.exists(f"{DL_DIR}/{k}")
]


if _NO_URL:
    raise WorkflowError(
        f"no download URL known for {len(_NO_URL)} file(s): {', '.join(_NO_URL[:5])}"
        f"{' ...' if len(_NO_URL) > 5 else ''} (see pddpm/data/sources.yaml). Either set them in the config, "
        f'downloads: {{urls: {{"{_NO_URL[0]}": "https://..."}}}}, or put the files at {DL_DIR}/<source>/<file>, '
        f"or use source: local for the data set"
    )


rule download_file:
    output:
        f"{DL_DIR}/{{source}}/{{file}}",
    log:
        log("download_file", "{source}", "{file}"),
    wildcard_constraints:
        source=_one_of(DOWNLOAD_SOURCES),
        file=_one_of(sorted({k.split("/", 1)[1] for k in NEEDED_DOWNLOADS})),
    # on a cluster the head node, which has internet access where compute nodes often have none
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=600,
    params:
        url=lambda wc: _source_files(wc.source)[wc.file]["url"],
        known_hash=lambda wc: data_download.known_hash(_source_files(wc.source)[wc.file]),
        tofu=f"{DL_DIR}/{data_download.TOFU_NAME}",
        retries=DOWNLOADS["retries"],
        timeout=DOWNLOADS["timeout_s"],
    script:
        "../workflow_scripts/download_file.py"


checkpoint download_raw:
    input:
        lambda wc: [f"{DL_DIR}/{ds_cfg(wc.ds)['kind']}/{f}" for f in _source_files(ds_cfg(wc.ds)["kind"])],
    output:
        "data/raw/{ds}/subjects.tsv",
    log:
        log("download_raw", "{ds}"),
    benchmark:
        bench("download_raw", "{ds}")
    wildcard_constraints:
        ds=_one_of(DOWNLOAD_DS),
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        kind=lambda wc: ds_cfg(wc.ds)["kind"],
        role=lambda wc: ds_cfg(wc.ds)["role"],
    script:
        "../workflow_scripts/download_raw.py"


rule link_local:
    input:
        lambda wc: str(_local_subjects(wc.ds)[wc.sub].files()[wc.key]),
    output:
        "data/raw/{ds}/{sub}_{key}.nii.gz",
    log:
        log("link_local", "{ds}", "{sub}_{key}"),
    wildcard_constraints:
        ds=_one_of(LOCAL_DS),
        key="t2|seg",
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../workflow_scripts/link_local.py"


rule local_subjects:
    input:
        lambda wc: [
            f"data/raw/{wc.ds}/{s}_{k}.nii.gz"
            for s, subj in _local_subjects(wc.ds).items()
            for k in subj.files()
        ],
    output:
        "data/raw/{ds}/subjects.tsv",
    log:
        log("local_subjects", "{ds}"),
    wildcard_constraints:
        ds=_one_of(LOCAL_DS),
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        # the listing itself: a subject added to or removed from the folder rewrites the sheet
        rows=lambda wc: subjects_table(list(_local_subjects(wc.ds).values())).to_dict("records"),
    script:
        "../workflow_scripts/local_subjects.py"


if config["atlas"]["source"] == "sri24":

    rule atlas_sri24:
        input:
            [f"{DL_DIR}/sri24/{f}" for f in _source_files("sri24")],
        output:
            t1="resources/atlas/t1.nii.gz",
            t2="resources/atlas/t2.nii.gz",
            mask="resources/atlas/mask.nii.gz",
        log:
            log("atlas_sri24"),
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            members=_source_files("sri24")["sri24_spm8.zip"]["members"],
        script:
            "../workflow_scripts/atlas_sri24.py"


if hdbet_download_needed():

    rule hdbet_weights:
        input:
            [f"{DL_DIR}/hdbet_v2/{f}" for f in _source_files("hdbet_v2")],
        output:
            directory(HDBET_DIR),
        log:
            log("hdbet_weights"),
        # beside its download on the head node: seconds of unzipping
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            members=_source_files("hdbet_v2")["release_v1.5.0.zip"]["members"],
        script:
            "../workflow_scripts/hdbet_weights.py"


# Everything this run fetches from the internet, as one target for a machine that has it (a cluster's
# login node when compute nodes are offline): snakemake --configfile <config> download_all
rule download_all:
    input:
        [f"{DL_DIR}/{k}" for k in NEEDED_DOWNLOADS] + ([HDBET_DIR] if hdbet_download_needed() else []),
    localrule: True


TARGETS += [f"data/raw/{ds}/subjects.tsv" for ds in DOWNLOAD_DS + LOCAL_DS]
