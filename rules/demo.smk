# Stage: the demo cohort (docs/demo-cohort.md). Raw-looking scans synthesised from nilearn's ICBM152
# 2009a, with their ground truth, and the atlas stand-in on SRI24's grid. One job per subject; each
# subject's seed comes from (demo.seed, data set, index), so adding subjects leaves the others untouched.


include: "helpers/demo.smk"


from pddpm import demo as demo_lib

DEMO_DS = [ds for ds in DATASETS if ds_cfg(ds)["source"] == "demo"]


if DEMO_DS:
    _DEMO_DS_RE = one_of(DEMO_DS)
    _DEMO_ANOMALOUS_RE = one_of(ds for ds in DEMO_DS if is_anomalous(ds))

    # The template's tissue maps and a synthetic head on the reference grid, shared by all subjects.

    rule demo_anatomy:
        output:
            artefacts.DEMO_ANATOMY,
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
            artefacts.DEMO_ANATOMY,
        output:
            t2=fill(artefacts.RAW_IMAGE, key="t2"),
            mask=fill(artefacts.DEMO_TRUTH, key="mask"),
            wm=fill(artefacts.DEMO_TRUTH, key="wm"),
            bias=fill(artefacts.DEMO_TRUTH, key="bias"),
            lesions=fill(artefacts.DEMO_TRUTH, key="lesions"),
            native_to_atlas=artefacts.DEMO_TRUTH_MATRIX,
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

    # The raw label file of an anomalous demo subject: its lesion truth, under the raw name (a copy in
    # the shell: a Python job's start-up would cost more than the copy).
    rule demo_seg:
        input:
            fill(artefacts.DEMO_TRUTH, key="lesions"),
        output:
            fill(artefacts.RAW_IMAGE, key="seg"),
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
        shell:
            "cp -v {input} {output} > {log} 2>&1"

    rule demo_subjects_tsv:
        input:
            lambda wc: demo_raw_files(wc.ds),
        output:
            artefacts.SUBJECTS_TSV,
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
                f"{ds}_{k}": fill(pattern, ds=ds, sub=subjects(ds)[0], key=k)
                for ds in DEMO_DS
                for k, pattern in (
                    ("t2", artefacts.RAW_IMAGE),
                    ("mask", artefacts.DEMO_TRUTH),
                    ("lesions", artefacts.DEMO_TRUTH),
                    ("bias", artefacts.DEMO_TRUTH),
                )
            },
        output:
            report(
                fill(artefacts.FIGURE, name="demo_cohort"),
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

    TARGETS += [fill(artefacts.SUBJECTS_TSV, ds=ds) for ds in DEMO_DS]
    TARGETS += [fill(artefacts.FIGURE, name="demo_cohort")]
    TARGETS += [f for ds in DEMO_DS for f in demo_raw_files(ds)]


if config["atlas"]["source"] == "demo":

    # The atlas stand-in: ICBM152 T1, its T2-like contrast and brain mask on SRI24's 240x240x155 grid.

    rule atlas_demo:
        output:
            **atlas_outputs(),
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

    TARGETS += list(atlas_outputs().values())
