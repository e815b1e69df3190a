# Stage: the demo cohort (issue 2). Raw-looking scans synthesised from nilearn's ICBM152 2009a, with
# their ground truth, and the atlas stand-in on SRI24's grid. One job per subject; each subject's seed
# comes from (demo.seed, data set, index), so adding subjects leaves the existing ones untouched.

from pddpm import demo as demo_lib

DEMO_DS = demo_lib.check_datasets(config["datasets"])
DEMO_ANATOMY = "resources/demo/anatomy.npz"


if DEMO_DS:
    _DEMO_DS_RE = "|".join(DEMO_DS)
    _DEMO_ANOMALOUS_RE = "|".join(ds for ds in DEMO_DS if is_anomalous(ds)) or "(?!)"

    # The template's tissue maps and a synthetic head on the reference grid, shared by all subjects.

    rule demo_anatomy:
        output:
            DEMO_ANATOMY,
        log:
            log("demo_anatomy"),
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=2000,  # measured 1.2 GB peak
            runtime=10,
        params:
            generator=demo_lib.GENERATOR_VERSION,
        script:
            "../workflow_scripts/demo_anatomy.py"

    # One synthetic subject: raw T2 plus ground truth (brain, WM, bias, lesions, pose).
    rule demo_cohort:
        input:
            DEMO_ANATOMY,
        output:
            t2="data/raw/{ds}/{sub}_t2.nii.gz",
            mask="data/raw/{ds}/truth/{sub}_mask.nii.gz",
            wm="data/raw/{ds}/truth/{sub}_wm.nii.gz",
            bias="data/raw/{ds}/truth/{sub}_bias.nii.gz",
            lesions="data/raw/{ds}/truth/{sub}_lesions.nii.gz",
            native_to_atlas="data/raw/{ds}/truth/{sub}_native_to_atlas.txt",
        log:
            log("demo_cohort", "{ds}", "{sub}"),
        benchmark:
            bench("demo_cohort", "{ds}", "{sub}")
        wildcard_constraints:
            ds=_DEMO_DS_RE,
            sub=r"[A-Za-z0-9_]+_\d\d\d+",
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=1200,  # measured 0.5-0.6 GB peak
            runtime=10,
        params:
            seed=config["demo"]["seed"],
            kind=lambda wc: ds_cfg(wc.ds)["kind"],
            generator=demo_lib.GENERATOR_VERSION,
        script:
            "../workflow_scripts/demo_cohort.py"

    # The raw label file of an anomalous demo subject: its lesion truth, under the raw name.
    rule demo_seg:
        input:
            "data/raw/{ds}/truth/{sub}_lesions.nii.gz",
        output:
            "data/raw/{ds}/{sub}_seg.nii.gz",
        log:
            log("demo_seg", "{ds}", "{sub}"),
        wildcard_constraints:
            ds=_DEMO_ANOMALOUS_RE,
            sub=r"[A-Za-z0-9_]+_\d\d\d+",
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
        script:
            "../workflow_scripts/demo_seg.py"

    rule demo_subjects_tsv:
        input:
            lambda wc: demo_lib.raw_files(wc.ds, subjects(wc.ds), is_anomalous(wc.ds)),
        output:
            "data/raw/{ds}/subjects.tsv",
        log:
            log("demo_subjects_tsv", "{ds}"),
        wildcard_constraints:
            ds=_DEMO_DS_RE,
        localrule: True
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
        params:
            subjects=lambda wc: subjects(wc.ds),
            anomalous=lambda wc: is_anomalous(wc.ds),
        script:
            "../workflow_scripts/demo_subjects_tsv.py"

    # The first subject of every demo data set with its ground truth, for the report.
    rule demo_preview:
        input:
            **{
                f"{ds}_{k}": f"data/raw/{ds}/{p}{subjects(ds)[0]}_{k}.nii.gz"
                for ds in DEMO_DS
                for k, p in (("t2", ""), ("mask", "truth/"), ("lesions", "truth/"), ("bias", "truth/"))
            },
        output:
            report(
                f"{RES}/figures/demo_cohort.png",
                caption="../report/demo_cohort.rst",
                category="1. Data",
                subcategory="Demo cohort",
            ),
        log:
            log("demo_preview"),
        conda:
            "../envs/eval.yaml"
        threads: 1
        resources:
            mem_mb=1500,
            runtime=5,
        params:
            datasets=DEMO_DS,
            seed=config["demo"]["seed"],
        script:
            "../workflow_scripts/demo_preview.py"

    TARGETS += [f"data/raw/{ds}/subjects.tsv" for ds in DEMO_DS] + [f"{RES}/figures/demo_cohort.png"]
    TARGETS += [f for ds in DEMO_DS for f in demo_lib.raw_files(ds, subjects(ds), is_anomalous(ds))]


if config["atlas"]["source"] == "demo":

    # The atlas stand-in: ICBM152 T1, its T2-like contrast and brain mask on SRI24's 240x240x155 grid.

    rule atlas_demo:
        output:
            t1="resources/atlas/t1.nii.gz",
            t2="resources/atlas/t2.nii.gz",
            mask="resources/atlas/mask.nii.gz",
        log:
            log("atlas_demo"),
        conda:
            "../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=1000,  # measured 0.5 GB peak
            runtime=10,
        script:
            "../workflow_scripts/atlas_demo.py"

    TARGETS += ["resources/atlas/t1.nii.gz", "resources/atlas/t2.nii.gz", "resources/atlas/mask.nii.gz"]
