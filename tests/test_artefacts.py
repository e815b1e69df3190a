"""pddpm.artefacts: the path patterns the workflow really uses, and the readers and writers of the files
between stages (round trips, and errors that name the file and the rule to run)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pddpm import artefacts
from pddpm.errors import PddpmInputError
from workflow_utils import REPO, snakemake, write_config

PATTERN_NAMES = [n for n in dir(artefacts) if n.isupper() and isinstance(getattr(artefacts, n), str)
                 and "/" in getattr(artefacts, n)]


def as_regex(pattern: str) -> re.Pattern:
    """A pattern's files: a wildcard is part of one path component, except `{name}` (a rule and its
    wildcards as folders, in LOG and BENCHMARK)."""
    parts = re.split(r"(\{\w+\})", pattern)
    return re.compile("".join((".+" if p == "{name}" else "[^/]+") if re.fullmatch(r"\{\w+\}", p)
                              else re.escape(p) for p in parts))


def test_fill_leaves_the_other_wildcards_and_path_needs_all():
    assert artefacts.fill(artefacts.INFERENCE, split="test") == "results/infer/{model}/fold{fold}/{ds}_test.npz"
    assert str(artefacts.path(artefacts.SLICES, ds="ixi", split="val_fold0")) == "results/slices/ixi_val_fold0.npz"
    with pytest.raises(KeyError, match="split"):
        artefacts.path(artefacts.SLICES, ds="ixi")


def test_one_of_matches_exactly_the_names_or_nothing():
    regex = re.compile(f"^(?:{artefacts.one_of(['a_b', 'c'])})$")
    assert regex.match("a_b") and regex.match("c") and not regex.match("a") and not regex.match("a_bc")
    nothing = re.compile(f"^(?:{artefacts.one_of([])})$")
    assert not any(nothing.match(s) for s in ("", "x", "ixi"))


def test_split_names_match_the_split_wildcard():
    healthy = artefacts.split_names(False, 2)
    assert healthy == ["train_fold0", "val_fold0", "train_fold1", "val_fold1", "test"]
    assert artefacts.split_names(True, 5) == ["val", "test"]
    regex = re.compile(f"^(?:{artefacts.SPLIT_PATTERN})$")
    assert all(regex.match(s) for s in healthy + ["val"]) and not regex.match("defects")


def test_every_file_the_workflow_plans_has_a_pattern_here(tmp_path):
    """All outputs, logs and benchmarks of the tiny demo's DAG are files of pddpm.artefacts' patterns, so
    the rules spell no layout of their own."""
    write_config(tmp_path)
    proc = snakemake(tmp_path, "-n")
    files = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"\s+(output|log|benchmark): (.*)$", line)
        if m:
            files.update(f.strip() for f in m.group(2).split(","))
    assert len(files) > 300
    regexes = [as_regex(getattr(artefacts, n)) for n in PATTERN_NAMES]
    stray = sorted(f for f in files if not any(r.fullmatch(f) for r in regexes))
    assert not stray, f"files without a pattern in pddpm/artefacts.py: {stray[:10]}"


def test_reading_the_stage_files_needs_neither_torch_nor_simpleitk():
    """The evaluation, table and figure code reads slices and inference files in an env without them."""
    code = ("import sys, pddpm.artefacts, pddpm.evaluate.split, pddpm.evaluate.aggregate, pddpm.report.table, "
            "pddpm.report.figures; print(sorted(m for m in ('torch', 'SimpleITK') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_subjects_tsv_round_trip_and_layout(tmp_path):
    rows = [artefacts.subjects_row("s_001", has_seg=True, label=1, site="HH"),
            artefacts.subjects_row("s_002", has_seg=False, label=0, site="IOP")]
    path = artefacts.write_subjects_tsv(rows, tmp_path / "ds" / "subjects.tsv")
    assert artefacts.read_subjects_tsv(path) == ["s_001", "s_002"]
    got = list(csv.DictReader(path.open(), delimiter="\t"))
    assert got[0] == {"subject": "s_001", "t2": "s_001_t2.nii.gz", "seg": "s_001_seg.nii.gz", "label": "1",
                      "site": "HH"}
    assert got[1]["seg"] == ""
    with pytest.raises(PddpmInputError, match="missing.tsv: subject sheet not found; run the"):
        artefacts.read_subjects_tsv(tmp_path / "missing.tsv")


def test_split_file_round_trip_memory_mapped(tmp_path):
    shape = (2, 3, 4, 5)
    arrays = {"image": np.random.default_rng(0).random(shape).astype(np.float16),
              "mask": np.ones(shape, np.uint8), "seg": np.zeros(shape, np.uint8),
              "subjects": np.array(["a", "b"]), "label": np.array([0, 1]), "spacing_mm": np.float64(4.0),
              "fov_mm": np.array([192.0, 192.0, 100.0])}
    path = artefacts.save_split(arrays, tmp_path / "ds_test.npz")
    for mmap in (False, True):
        back = artefacts.load_split(path, mmap=mmap)
        np.testing.assert_array_equal(back["image"], arrays["image"])
        assert isinstance(back["image"], np.memmap) == mmap and back["spacing_mm"] == 4.0


def test_inference_file_reads_only_the_keys_asked(tmp_path):
    maps = np.full((2, 3, 4, 4), 0.5, np.float16)
    path = artefacts.save_inference(tmp_path / "i.npz", maps * 0, maps, ["a", "b"], {"seed": 7, "t": 500})
    full = artefacts.load_inference(path)
    assert full["info"] == {"seed": 7, "t": 500} and int(full["seed"]) == 7
    some = artefacts.load_inference(path, ("anomaly", "subjects"))
    assert set(some) == {"anomaly", "subjects", "info"}
    np.testing.assert_array_equal(some["anomaly"], maps)
    with pytest.raises(PddpmInputError, match=r"lacks \['masks'\]; delete it and rerun `infer`"):
        artefacts.load_inference(path, ("masks",))
    with pytest.raises(PddpmInputError, match="run the `infer` rule"):
        artefacts.load_inference(tmp_path / "none.npz")


def test_threshold_round_trip_and_errors(tmp_path):
    path = artefacts.write_threshold({"threshold": 0.25, "method": "interval"}, tmp_path / "t.json")
    assert artefacts.read_threshold(path) == 0.25
    assert json.loads(path.read_text())["method"] == "interval"
    with pytest.raises(PddpmInputError, match="none.json: threshold file not found; run the `threshold` rule"):
        artefacts.read_threshold(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PddpmInputError, match="no readable `threshold`"):
        artefacts.read_threshold(tmp_path / "bad.json")


def test_per_volume_file_round_trip_and_checks(tmp_path):
    table = pd.DataFrame({"subject": ["a", "b"], "dice": [0.5, float("nan")], "auprc": [0.25, 0.125],
                          "auroc": [0.9, 0.8], "best_dice": [0.6, 0.7]})
    assert list(table.columns) == artefacts.per_volume_columns(anomalous=True)
    path = artefacts.write_per_volume(table, tmp_path / "x_per_volume.csv")
    pd.testing.assert_frame_equal(artefacts.read_per_volume(path), table)
    with pytest.raises(PddpmInputError, match=r"columns \['recon_error'\] missing"):
        artefacts.read_per_volume(path, ["recon_error"])
    table.assign(dice=["x", "y"]).to_csv(tmp_path / "bad_per_volume.csv", index=False)
    with pytest.raises(PddpmInputError, match="column `dice` is not numeric"):
        artefacts.read_per_volume(tmp_path / "bad_per_volume.csv")
    with pytest.raises(PddpmInputError, match="run the `metrics` rule"):
        artefacts.read_per_volume(tmp_path / "none.csv")


def test_rules_spell_no_layout_of_their_own():
    """Path literals in the rules (outside comments and docstrings) would be a second owner of a layout."""
    literal = re.compile(r"""["'](?:results|data|resources)/""")
    found = []
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").rglob("*.smk"))]:
        in_doc = False
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if code.strip().startswith('"""'):
                in_doc = not in_doc if code.count('"""') == 1 else in_doc
                continue
            if not in_doc and literal.search(code):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
