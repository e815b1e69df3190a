"""Table 1, figures and the report rules, on synthetic evaluation outputs in the contract's formats."""

from __future__ import annotations

import html
import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score

from pddpm import artefacts
from pddpm.errors import PddpmInputError
from pddpm.report import figures, table

REPO = Path(__file__).resolve().parents[1]
# the tiny config's data sets with three models (the tiny workflow run trains all eight; the tests here
# make their own files, and those with more models say so)
TINY = {**yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text()), "models": ["pddpm", "ddpm", "thresh"]}


# ------------------------------------------------------------------------------------------------ fixtures

def per_volume_file(root: Path, model: str, fold: int, ds: str) -> Path:
    return root / artefacts.path(artefacts.PER_VOLUME, model=model, fold=fold, ds=ds)


def per_volume_files(root: Path, config: dict) -> dict:
    """What the `table` rule hands the library: (model, fold, data set) -> file, for the whole config."""
    return {(m, f, d.key): per_volume_file(root, m, f, d.key) for m in config["models"]
            for f in config["folds_to_run"] for d in table.datasets_from_config(config)}


def write_per_volume(root: Path, config: dict, values: dict) -> None:
    """values: (model, fold, ds) -> list of per-volume metric values (dice for anomalous, recon_error for
    healthy); the other columns are filled with noise that the table must not show."""
    rng = np.random.default_rng(0)
    for (model, fold, ds), vals in values.items():
        path = per_volume_file(root, model, fold, ds)
        path.parent.mkdir(parents=True, exist_ok=True)
        subjects = [f"{ds}_{i:03d}" for i in range(len(vals))]
        if config["datasets"][ds]["role"] == "anomalous":
            vals = np.asarray(vals, float)
            df = pd.DataFrame({"subject": subjects, "dice": vals, "auprc": vals / 2,
                               "auroc": rng.random(len(vals)), "best_dice": rng.random(len(vals))})
        else:
            df = pd.DataFrame({"subject": subjects, "recon_error": vals})
        df.to_csv(path, index=False)


def synthetic_run(root: Path, config: dict, n_test: int = 3, shape=(6, 24, 24), seed: int = 0) -> dict:
    """The files the report stage reads, as the contract shapes them: slices, inference, thresholds,
    per-volume metrics and training logs. Returns the known per-fold Dice means."""
    rng = np.random.default_rng(seed)
    res = root / "results"
    anomalous = [ds for ds, c in config["datasets"].items() if c["role"] == "anomalous"]
    healthy = config["train_dataset"]
    fold_means = {}
    for ds in anomalous:
        image = rng.random((n_test, *shape)).astype(np.float16) * 0.6
        seg = np.zeros((n_test, *shape), np.uint8)
        for v in range(n_test):  # lesions of different sizes, on different slices
            z, r = 1 + v % (shape[0] - 2), 2 + 2 * v
            seg[v, z - 1:z + 2, 8:8 + r, 8:8 + r] = 1
        image[seg > 0] = 0.95
        subjects = np.array([f"{ds}_{i:03d}" for i in range(n_test)])
        path = res / "slices" / f"{ds}_test.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, image=image, mask=np.ones_like(seg), seg=seg, subjects=subjects,
                 label=np.ones(n_test, int), spacing_mm=4.0, fov_mm=np.array([192.0, 192.0, 100.0]))
        for model in config["models"]:
            for fold in config["folds_to_run"]:
                d = res / "infer" / model / f"fold{fold}"
                d.mkdir(parents=True, exist_ok=True)
                anomaly = (seg * 0.5 + rng.random(seg.shape) * 0.4).astype(np.float16)
                # thresh stores a zero reconstruction (pddpm.infer): its map is the intensity
                recon = np.zeros_like(image) if model == "thresh" else (image * 0.9).astype(np.float16)
                np.savez_compressed(d / f"{ds}_test.npz", recon=recon, anomaly=anomaly, subjects=subjects)
                e = res / "eval" / model / f"fold{fold}"
                e.mkdir(parents=True, exist_ok=True)
                (e / f"{ds}_threshold.json").write_text(json.dumps(
                    {"threshold": 0.45, "method": "interval", "val_dice": 0.5}))
                vals = rng.random(n_test)
                fold_means[(model, fold, ds)] = vals.mean()
                write_per_volume(root, config, {(model, fold, ds): vals})
    for model in config["models"]:
        for fold in config["folds_to_run"]:
            write_per_volume(root, config, {(model, fold, healthy): rng.random(4) / 50})
            if model != "thresh":
                # as pddpm.train writes it: one row per validation interval
                steps = np.arange(5, 41, 5)
                log = pd.DataFrame({"step": steps, "train_loss": 0.3 / np.sqrt(steps) + rng.random(8) * 0.01,
                                    "val_loss": 0.25 / np.sqrt(steps) + rng.random(8) * 0.01,
                                    "images_per_s": 50.0})
                d = res / "models" / model / f"fold{fold}"
                d.mkdir(parents=True, exist_ok=True)
                log.to_csv(d / "train_log.csv", index=False)
    return fold_means


def assert_png(path: Path, min_px: int = 200, max_px: int = 4000) -> tuple[int, int]:
    """A real PNG (signature, IHDR) of a sensible size, and not blank."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert min_px <= width <= max_px and min_px <= height <= max_px, (width, height)
    assert len(data) > 5000, f"{path} looks blank ({len(data)} bytes)"
    return width, height


def two_fold_config() -> dict:
    return {**TINY, "folds_to_run": [0, 1], "splits": {**TINY["splits"], "folds": 2}}


# ------------------------------------------------------------------------------------------------ table

def test_table_in_three_formats_with_independently_computed_fold_statistics(tmp_path):
    config = two_fold_config()
    # known per-volume Dice per fold: fold means 0.2/0.4 (pddpm), 0.1/0.1 (ddpm), 0.05/0.15 (thresh)
    vols = {"pddpm": ([0.1, 0.3], [0.4, 0.4]), "ddpm": ([0.1, 0.1], [0.05, 0.15]),
            "thresh": ([0.0, 0.1], [0.1, 0.2])}
    values = {}
    for model, per_fold in vols.items():
        for fold, v in enumerate(per_fold):
            values[(model, fold, "demo_brats")] = v
            values[(model, fold, "demo_mslub")] = [x / 2 for x in v]
            values[(model, fold, "demo_ixi")] = [0.01 * (fold + 1), 0.03 * (fold + 1)]
    write_per_volume(tmp_path, config, values)

    t = table.make_table1(per_volume_files(tmp_path, config), config)
    table.write_table1(t, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex", tmp_path / "t.html")

    csv = pd.read_csv(tmp_path / "t.csv")
    ours = csv[csv["source"] == "this run"].set_index("model")
    for model, per_fold in vols.items():
        means = [np.mean(v) for v in per_fold]
        assert ours.loc[model, "demo_brats_dice_mean"] == pytest.approx(100 * np.mean(means))
        assert ours.loc[model, "demo_brats_dice_std"] == pytest.approx(100 * np.std(means, ddof=1))
        assert ours.loc[model, "demo_brats_auprc_mean"] == pytest.approx(50 * np.mean(means))
        assert ours.loc[model, "demo_mslub_dice_mean"] == pytest.approx(50 * np.mean(means))
    assert ours.loc["pddpm", "demo_ixi_recon_error_mean"] == pytest.approx(np.mean([0.02, 0.04]))
    assert np.isnan(ours.loc["thresh", "demo_ixi_recon_error_mean"])  # no reconstruction: n/a
    assert (ours["n_folds"] == 2).all()
    assert csv["run_name"].eq("tiny_demo").all() and csv["demo_cohort"].all()
    # paper rows beside ours, in the paper's order (Thresh, DDPM, pDDPM), numbers from docs/spec.md section 8
    assert list(zip(csv["model"], csv["source"], strict=True)) == [
        (m, s) for m in ("thresh", "ddpm", "pddpm") for s in ("this run", "paper")]
    paper = csv[csv["source"] == "paper"].set_index("model")
    assert paper.loc["pddpm", "demo_brats_dice_mean"] == 49.41
    assert paper.loc["pddpm", "demo_mslub_auprc_std"] == 0.51
    assert np.isnan(paper.loc["thresh", "demo_brats_dice_std"])

    md = (tmp_path / "t.md").read_text()
    assert "DEMO COHORT" in md and "tiny_demo" in md
    pddpm_row = next(line for line in md.splitlines() if line.startswith("| pDDPM ") and "this run" in line)
    expected = f"{100 * 0.3:.2f} ± {100 * np.std([0.2, 0.4], ddof=1):.2f}"
    assert expected in pddpm_row
    assert re.search(r"\| pDDPM\s+\| paper\s+\| 49\.41 ± 0\.66", md)
    assert "| Thresh  | paper    | 19.69 " in md  # the paper gives Thresh no spread

    tex = (tmp_path / "t.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\bottomrule" in tex
    assert expected.replace("±", r"$\pm$") in tex
    assert r"49.41 $\pm$ 0.66" in tex and "demo\\_brats" in tex
    # every body row has as many cells as the header
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len({row.count(" & ") for row in rows}) == 1 and len(rows) == 7

    page = (tmp_path / "t.html").read_text()
    assert page.count('<tr class="paper">') == 3 and expected in page and "DEMO COHORT" in page


def test_single_fold_has_no_spread_and_real_data_no_demo_note(tmp_path):
    config = {**TINY, "run_name": "paper_like",
              "datasets": {k: {**v, "source": "local"} for k, v in TINY["datasets"].items()}}
    values = {(m, 0, ds): [0.2, 0.4] for m in config["models"] for ds in ("demo_brats", "demo_mslub")}
    values.update({(m, 0, "demo_ixi"): [0.01] for m in config["models"]})
    write_per_volume(tmp_path, config, values)
    t = table.make_table1(per_volume_files(tmp_path, config), config)
    md = table.to_markdown(t)
    assert "DEMO" not in md and "paper_like" in md
    ours_row = next(line for line in md.splitlines() if line.startswith("| DDPM ") and "this run" in line)
    assert "30.00" in ours_row and "±" not in ours_row
    assert "single fold" in md


def test_reference_numbers_match_spec_section_8():
    ref = table.load_reference()
    spec = REPO / "docs" / "spec.md"
    assert set(ref["method"]) == {"thresh", "ae", "vae", "svae", "dae", "fanogan", "ddpm", "pddpm"}
    assert ref["source"].str.contains("MIDL 2023, Table 1").all()
    row = ref.set_index(["method", "dataset", "metric"])
    assert row.loc[("ddpm", "brats", "auprc"), "mean"] == 49.78
    assert row.loc[("fanogan", "mslub", "dice"), "std"] == 1.18
    text = spec.read_text()  # every number against the spec's table (docs/spec.md section 8)
    for (method, ds, metric), r in row.iterrows():
        label = r["label"]
        line = next(li for li in text.splitlines() if li.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        cell = cells[{"brats": 0, "mslub": 2}[ds] + {"dice": 0, "auprc": 1}[metric]]
        expect = f"{r['mean']:.2f}" + ("" if np.isnan(r["std"]) else f" +- {r['std']:.2f}")
        assert cell == expect, (method, ds, metric)


EIGHT = ["pddpm", "svae", "ddpm", "thresh", "dae", "ae", "fanogan", "vae"]  # config order, not the paper's


def test_all_eight_models_in_the_papers_order_each_with_the_papers_row(tmp_path):
    config = {**TINY, "models": EIGHT}
    values = {(m, 0, ds): [0.1 + 0.05 * i, 0.2] for i, m in enumerate(EIGHT) for ds in ("demo_brats", "demo_mslub")}
    values.update({(m, 0, "demo_ixi"): [0.01] for m in EIGHT})
    write_per_volume(tmp_path, config, values)
    t = table.make_table1(per_volume_files(tmp_path, config), config)
    paths = [tmp_path / f"t.{e}" for e in ("csv", "md", "tex", "html")] + [tmp_path / "summary.txt"]
    table.write_table1(t, *paths)
    csv = pd.read_csv(paths[0])
    order = ["thresh", "ae", "vae", "svae", "dae", "fanogan", "ddpm", "pddpm"]  # the paper's rows, top to bottom
    assert list(zip(csv["model"], csv["source"], strict=True)) == [(m, s) for m in order for s in ("this run", "paper")]
    paper = csv[csv["source"] == "paper"].set_index("model")
    ref = pd.read_csv(REPO / "pddpm" / "data" / "reference_table1.csv").set_index(["method", "dataset", "metric"])
    for m in order:  # every paper row from the shipped reference, brats numbers under the demo BraTS columns
        assert paper.loc[m, "demo_brats_dice_mean"] == ref.loc[(m, "brats", "dice"), "mean"]
        assert paper.loc[m, "demo_mslub_auprc_mean"] == ref.loc[(m, "mslub", "auprc"), "mean"]
    md = paths[1].read_text()
    labels = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "this run" in line]
    assert labels == ["Thresh", "AE", "VAE", "SVAE", "DAE", "f-AnoGAN", "DDPM", "pDDPM"]
    # the footnotes: SVAE's architecture is ours, the VAEs reconstruct from the posterior mean
    assert "SVAE: the paper's architecture is not published; this run's is ours" in md
    assert "VAE: reconstructs from the posterior mean" in md
    tex = paths[2].read_text()
    assert len([line for line in tex.splitlines() if line.endswith(r"\\")]) == 17  # header + 16 rows
    assert "architecture is not published" in tex and "architecture is not published" in paths[3].read_text()
    # the ordering summary: one sentence per anomalous data set, in the table outputs too
    summary = paths[4].read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["demo_brats", "demo_mslub"]
    assert all(line in md for line in summary) and "Ordering against the paper" in md
    # without the models that need them, no footnotes
    assert "posterior mean" not in table.to_markdown(table.make_table1(per_volume_files(tmp_path, TINY), TINY))


LABELS = {"dice": "Dice", "auprc": "AUPRC"}
PAPER = {"dice": {"pddpm": 49.41, "ddpm": 40.67, "thresh": 19.69}, "auprc": {"pddpm": 54.76, "ddpm": 49.78,
                                                                             "thresh": 20.27}}


def test_ordering_sentence_as_in_the_paper():
    ours = {"dice": {"pddpm": 30.0, "ddpm": 20.0, "thresh": 10.0}, "auprc": {"pddpm": 31.0, "ddpm": 22.0,
                                                                           "thresh": 5.0}}
    assert (table.ordering_sentence("demo_brats", ours, PAPER, LABELS)
            == "demo_brats: pDDPM > DDPM > Thresh in Dice and AUPRC, as in the paper.")


def test_ordering_sentence_names_the_swapped_pairs():
    # issue 11's demo table: Thresh first in both metrics, DDPM ahead of pDDPM in Dice only
    ours = {"dice": {"thresh": 51.85, "ddpm": 14.34, "pddpm": 4.56}, "auprc": {"thresh": 43.66, "ddpm": 18.55,
                                                                             "pddpm": 11.63}}
    ours["auprc"]["pddpm"] = 20.0  # pDDPM ahead of DDPM in AUPRC
    assert table.ordering_sentence("demo_brats", ours, PAPER, LABELS) == (
        "demo_brats: Dice Thresh > DDPM > pDDPM, the paper has pDDPM > DDPM > Thresh (3 of 3 pairs swapped: "
        "Thresh above DDPM, Thresh above pDDPM, DDPM above pDDPM); AUPRC Thresh > pDDPM > DDPM, the paper has "
        "pDDPM > DDPM > Thresh (2 of 3 pairs swapped: Thresh above DDPM, Thresh above pDDPM).")


def test_ordering_sentence_ties_missing_values_and_models_without_paper_rows():
    ours = {"dice": {"pddpm": 0.25, "ddpm": 0.25, "cddpm": 40.0}, "auprc": {"pddpm": 0.36, "ddpm": 0.23}}
    assert table.ordering_sentence("demo_mslub", ours, PAPER, LABELS) == (
        "demo_mslub: Dice DDPM = pDDPM, the paper has pDDPM > DDPM (1 of 1 pairs swapped: DDPM level with pDDPM); "
        "AUPRC pDDPM > DDPM, as in the paper (cDDPM not in the paper's table).")  # cddpm: no reference rows
    # the same order in both metrics, said once; each metric in its own words when they differ
    same = {"dice": {"pddpm": 2.0, "ddpm": 1.0}, "auprc": {"pddpm": 2.0, "ddpm": 1.0}}
    assert table.ordering_sentence("x", same, PAPER, LABELS) == "x: pDDPM > DDPM in Dice and AUPRC, as in the paper."
    only_one = {"dice": {"pddpm": 2.0, "thresh": 1.0}, "auprc": {"pddpm": 2.0}}  # AUPRC of thresh undefined
    assert table.ordering_sentence("x", only_one, PAPER, LABELS) == "x: Dice pDDPM > Thresh, as in the paper."
    assert table.ordering_sentence("x", {"dice": {"pddpm": 1.0, "cddpm": 2.0}}, PAPER, LABELS) == (
        "x: fewer than two of the models run (pDDPM, cDDPM) have the paper's numbers; no ordering to compare.")


def test_ordering_summary_is_computed_from_the_table(tmp_path):
    """The sentences follow the table's numbers: the same per-volume files with one model's Dice raised
    change the ordering sentence of that data set only."""
    config = {**TINY, "models": ["pddpm", "ddpm", "thresh"]}
    dice = {"pddpm": 0.4, "ddpm": 0.3, "thresh": 0.1}
    values = {(m, 0, ds): [d, d] for m, d in dice.items() for ds in ("demo_brats", "demo_mslub")}
    values.update({(m, 0, "demo_ixi"): [0.01] for m in dice})
    write_per_volume(tmp_path, config, values)
    first = table.make_table1(per_volume_files(tmp_path, config), config).summary
    assert first == ["demo_brats: pDDPM > DDPM > Thresh in Dice and AUPRC, as in the paper.",
                     "demo_mslub: pDDPM > DDPM > Thresh in Dice and AUPRC, as in the paper."]
    write_per_volume(tmp_path, config, {("thresh", 0, "demo_mslub"): [0.35, 0.35]})
    second = table.make_table1(per_volume_files(tmp_path, config), config).summary
    assert second[0] == first[0]
    assert "Dice pDDPM > Thresh > DDPM, the paper has pDDPM > DDPM > Thresh (1 of 3 pairs swapped: Thresh above " \
           "DDPM)" in second[1]


def test_missing_model_or_dataset_in_eval_outputs_is_a_clear_error(tmp_path):
    config = TINY
    values = {(m, 0, ds): [0.3] for m in ("pddpm", "thresh") for ds in ("demo_brats", "demo_mslub")}
    values.update({(m, 0, "demo_ixi"): [0.01] for m in ("pddpm", "ddpm", "thresh")})
    write_per_volume(tmp_path, config, values)
    with pytest.raises(PddpmInputError) as err:
        table.make_table1(per_volume_files(tmp_path, config), config)
    msg = str(err.value)
    # both missing files of the ddpm model named at once, and what to do
    assert "ddpm/fold0/demo_brats_per_volume.csv" in msg and "ddpm/fold0/demo_mslub_per_volume.csv" in msg
    assert "missing for 2" in msg and "metrics" in msg


def test_per_volume_file_without_needed_column_is_named(tmp_path):
    config = TINY
    values = {(m, 0, ds): [0.3] for m in config["models"] for ds in ("demo_brats", "demo_mslub")}
    values.update({(m, 0, "demo_ixi"): [0.01] for m in config["models"]})
    write_per_volume(tmp_path, config, values)
    bad = per_volume_file(tmp_path, "ddpm", 0, "demo_mslub")
    pd.read_csv(bad).drop(columns="auprc").to_csv(bad, index=False)
    with pytest.raises(PddpmInputError, match=r"demo_mslub_per_volume.csv: columns \['auprc'\] missing"):
        table.make_table1(per_volume_files(tmp_path, config), config)


# ------------------------------------------------------------------------------------------------ figures

def test_pr_accumulator_is_exact_against_scikit_learn():
    rng = np.random.default_rng(3)
    labels = rng.random((3, 5, 16, 16)) < 0.1
    scores = (rng.random(labels.shape) * 0.6 + labels * rng.random(labels.shape) * 0.5).astype(np.float16)
    scores[0, 0, 0, :4] = [-0.5, -0.25, 0.0, -0.0]  # negative scores and signed zeros sort correctly
    acc = figures.PRAccumulator()
    for v in range(3):  # streamed volume by volume
        acc.add(scores[v], labels[v])
    precision, recall, thresholds, ap = acc.curve()
    assert ap == pytest.approx(average_precision_score(labels.ravel(), scores.astype(np.float32).ravel()),
                               abs=1e-12)
    assert recall[-1] == 1.0 and np.all(np.diff(thresholds) < 0)
    with pytest.raises(PddpmInputError, match="different grids"):
        acc.add(scores[0], labels[0, :, :8])


def test_pick_volumes_and_lesion_slice():
    seg = np.zeros((5, 4, 6, 6), np.uint8)
    for v, size in enumerate([0, 3, 9, 1, 5]):
        seg[v, 2].flat[:size] = 1
    assert figures.pick_volumes(seg, 1) == [2]
    assert figures.pick_volumes(seg, 3) == [2, 1, 3]  # largest, middle, smallest lesion
    assert figures.lesion_slice(seg[2]) == 2 and figures.lesion_slice(seg[0]) == 2  # empty: middle slice


def test_figures_are_valid_pngs_from_synthetic_files(tmp_path):
    config = two_fold_config()
    synthetic_run(tmp_path, config)
    res = tmp_path / "results"
    models = config["models"]
    out = figures.qualitative_from_files(
        res / "slices" / "demo_brats_test.npz",
        {m: res / "infer" / m / "fold0" / "demo_brats_test.npz" for m in models},
        {m: res / "eval" / m / "fold0" / "demo_brats_threshold.json" for m in models},
        n_volumes=2, title="demo_brats", path=tmp_path / "fig" / "qual.png")
    w, h = assert_png(out)
    assert h > w  # 2 volumes x 3 models rows, 5 columns
    keys = [(m, f) for m in models for f in (0, 1)]
    out = figures.pr_curves_from_files(
        res / "slices" / "demo_mslub_test.npz",
        {k: res / "infer" / k[0] / f"fold{k[1]}" / "demo_mslub_test.npz" for k in keys},
        {k: res / "eval" / k[0] / f"fold{k[1]}" / "demo_mslub_threshold.json" for k in keys},
        "demo_mslub", tmp_path / "fig" / "pr.png")
    assert_png(out)
    datasets = [d for d in table.datasets_from_config(config) if d.role == "anomalous"]
    per_volume = table.load_per_volume(per_volume_files(tmp_path, config), datasets)
    assert_png(figures.dice_distribution_figure(per_volume, ["demo_brats", "demo_mslub"],
                                                tmp_path / "fig" / "dice.png"))
    logs = {(m, f): figures.read_train_log(res / "models" / m / f"fold{f}" / "train_log.csv")
            for m in ("pddpm", "ddpm") for f in (0, 1)}
    assert_png(figures.training_curves_figure(logs, tmp_path / "fig" / "train.png"))
    assert not list((tmp_path / "fig").glob(".*"))  # no temporary files left behind


NINE = ["pddpm", "ddpm", "thresh", "ae", "vae", "svae", "dae", "fanogan", "cddpm"]


def test_figures_stay_legible_with_nine_models(tmp_path):
    """Every model of the paper's Table 1 and one more: distinct colours, and figures that grow in one
    direction only, to a size a screen shows."""
    config = {**two_fold_config(), "models": NINE}
    synthetic_run(tmp_path, config, n_test=3, shape=(6, 48, 48))
    res = tmp_path / "results"
    colours = figures.model_colours(NINE)
    assert len(set(colours.values())) == 9
    assert colours["pddpm"] == figures.model_colours(["pddpm", "thresh"])["pddpm"]  # the same in every run
    w, h = assert_png(figures.qualitative_from_files(
        res / "slices" / "demo_brats_test.npz",
        {m: res / "infer" / m / "fold0" / "demo_brats_test.npz" for m in NINE},
        {m: res / "eval" / m / "fold0" / "demo_brats_threshold.json" for m in NINE},
        n_volumes=3, title="demo_brats", path=tmp_path / "qual.png"))
    assert 1200 < w < 2000 and 1200 < h < 2000  # 10 columns (input + models) x 9 rows (3 volumes x 3)
    w3, h3 = assert_png(figures.qualitative_from_files(
        res / "slices" / "demo_brats_test.npz",
        {m: res / "infer" / m / "fold0" / "demo_brats_test.npz" for m in NINE[:3]},
        {m: res / "eval" / m / "fold0" / "demo_brats_threshold.json" for m in NINE[:3]},
        n_volumes=3, title="demo_brats", path=tmp_path / "qual3.png"))
    assert w3 < w / 2 and abs(h3 - h) < 0.1 * h  # more models: wider, not taller
    datasets = [d for d in table.datasets_from_config(config) if d.role == "anomalous"]
    per_volume = table.load_per_volume(per_volume_files(tmp_path, config), datasets)
    w, h = assert_png(figures.dice_distribution_figure(per_volume, ["demo_brats", "demo_mslub"], tmp_path / "d.png"))
    assert w < 1400 and h < 1000
    keys = [(m, f) for m in NINE for f in (0, 1)]
    w, h = assert_png(figures.pr_curves_from_files(
        res / "slices" / "demo_mslub_test.npz",
        {k: res / "infer" / k[0] / f"fold{k[1]}" / "demo_mslub_test.npz" for k in keys},
        {k: res / "eval" / k[0] / f"fold{k[1]}" / "demo_mslub_threshold.json" for k in keys},
        "demo_mslub", tmp_path / "pr.png"), min_px=300)
    assert w > 1.3 * h  # the legend of nine models beside the axes, not over the curves


def test_training_curves_show_each_models_own_loss_terms(tmp_path):
    steps = np.arange(1, 41)
    vae = pd.DataFrame({"step": steps, "train_loss": 1 / steps, "val_loss": np.where(steps % 10 == 0, 0.9 / steps,
                                                                                    np.nan),
                        "images_per_s": np.nan, "train_l1": 0.8 / steps, "train_kl": 100 + steps,
                        "val_l1": np.where(steps % 10 == 0, 0.7 / steps, np.nan),
                        "val_kl": np.where(steps % 10 == 0, 90.0 + steps, np.nan)})
    gan = pd.DataFrame({"step": steps, "train_loss": -1 / steps, "val_loss": np.nan, "images_per_s": np.nan,
                        "train_critic": np.where(steps < 20, -2 / steps, np.nan),
                        "val_encoder": np.where(steps % 10 == 0, 0.5 / steps, np.nan)})
    ae = vae[["step", "train_loss", "val_loss", "images_per_s"]]
    assert figures.loss_terms(vae) == ["loss", "l1", "kl"]
    assert figures.loss_terms(gan) == ["loss", "critic", "encoder"]  # a term logged in one phase, or val only
    assert figures.loss_terms(ae) == ["loss"]
    logs = {("vae", 0): vae, ("vae", 1): vae * 1.0, ("ae", 0): ae}
    w, h = assert_png(figures.training_curves_figure(logs, tmp_path / "t.png"), min_px=250)
    assert w > 3.5 * h  # 4 panels in one row: AE loss, VAE loss, l1, kl
    logs[("fanogan", 0)] = gan
    w2, h2 = assert_png(figures.training_curves_figure(logs, tmp_path / "t2.png"), min_px=250)
    assert abs(w2 - w) < 0.05 * w and h2 > 1.8 * h  # 7 panels: a second row


def test_training_curve_axes_name_each_kinds_own_loss(tmp_path, monkeypatch):
    """The y axis says what the plotted term is for that kind (pddpm.models.KINDS loss_terms), not one
    loss for all: L1 for the AE, MSE for the DAE, the f-AnoGAN phases' terms by their meaning."""
    steps = np.arange(1, 21)
    base = {"step": steps, "train_loss": 1 / steps, "val_loss": np.where(steps % 5 == 0, 1 / steps, np.nan),
            "images_per_s": np.nan}
    gan = pd.DataFrame({**base, "train_wdist": np.where(steps < 10, 1.0, np.nan),
                        "train_image": np.where(steps >= 10, 0.1, np.nan)})
    logs = {("ae", 0): pd.DataFrame(base), ("dae", 0): pd.DataFrame(base), ("fanogan", 0): gan,
            ("newkind", 0): pd.DataFrame(base)}
    labels = {}
    save = figures.save_figure

    def capture(fig, path):
        for ax in fig.axes:
            if ax.get_title():  # a panel (unused grid cells have none)
                labels.setdefault(ax.get_title().split(":")[0], []).append(ax.get_ylabel().replace("\n", " "))
        return save(fig, path)

    monkeypatch.setattr(figures, "save_figure", capture)
    assert_png(figures.training_curves_figure(logs, tmp_path / "t.png"), min_px=250)
    assert labels["AE"] == ["L1 reconstruction error"]
    assert labels["DAE"] == ["MSE inside the brain mask"]
    assert labels["f-AnoGAN"][0].startswith("GAN phase: WGAN-GP critic loss; encoder phase: izi_f")
    assert labels["f-AnoGAN"][1:] == ["Wasserstein estimate D(x) - D(G(z))", "image MSE of G(E(x))"]
    assert labels["newkind"] == ["loss"]  # a kind the registry does not describe: the term's name


def test_qualitative_rejects_maps_on_another_grid(tmp_path):
    synthetic_run(tmp_path, TINY)
    res = tmp_path / "results"
    bad = res / "infer" / "ddpm" / "fold0" / "demo_brats_test.npz"
    arrays = dict(np.load(bad))
    arrays["anomaly"] = arrays["anomaly"][:, :, :12]
    np.savez(bad, **arrays)
    with pytest.raises(PddpmInputError, match="different grids"):
        figures.qualitative_from_files(
            res / "slices" / "demo_brats_test.npz",
            {m: res / "infer" / m / "fold0" / "demo_brats_test.npz" for m in TINY["models"]},
            {m: res / "eval" / m / "fold0" / "demo_brats_threshold.json" for m in TINY["models"]},
            n_volumes=1, title="demo_brats", path=tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


def test_training_log_without_loss_column_is_named(tmp_path):
    path = tmp_path / "train_log.csv"
    pd.DataFrame({"step": [1, 2], "loss": [0.3, 0.2]}).to_csv(path, index=False)
    with pytest.raises(PddpmInputError, match=r"train_log.csv: columns \['train_loss', 'val_loss'\] missing"):
        figures.read_train_log(path)


# ------------------------------------------------------------------------------------------------ workflow

REPORT_RULES = ("table", "qualitative", "pr_curves", "dice_distribution", "training_curves")


@pytest.mark.workflow
def test_report_rules_run_and_build_the_html_report(tmp_path):
    """The report stage alone, through snakemake, on synthetic upstream files (other stages excluded
    with --allowed-rules so their outputs count as given): every target, the report, and a setting of
    one figure reruns only that figure."""
    from workflow_utils import planned_jobs, snakemake, write_config

    write_config(tmp_path, {"models": TINY["models"]})
    synthetic_run(tmp_path, TINY)
    res = tmp_path / "results"
    targets = ["results/tables/table1.html", "results/tables/table1.tex", "results/tables/table1_summary.txt",
               "results/figures/qualitative_demo_brats.png", "results/figures/qualitative_demo_mslub.png",
               "results/figures/pr_demo_brats.png", "results/figures/pr_demo_mslub.png",
               "results/figures/dice_distribution.png", "results/figures/training_curves.png"]
    # "--cores 2" closes the list of allowed rules so that the targets parse as targets
    allowed = ["--allowed-rules", *REPORT_RULES, "--cores", "2"]
    snakemake(tmp_path, *allowed, *targets)
    for t in targets:
        if t.endswith(".png"):
            assert_png(tmp_path / t)
    assert "DEMO COHORT" in (res / "tables" / "table1.md").read_text()
    assert (res / "logs" / "table" / "table1.log").read_text().count("pDDPM") >= 2

    snakemake(tmp_path, "--report", "results/report.html", *allowed, *targets)
    page = (res / "report.html").read_text()
    for needle in ("5. Results", "4. Training", "qualitative_demo_brats.png", "table1.html",
                   "This is the demo cohort", "Qualitative results on the test split"):
        assert needle in page, needle
    # the front page says, per anomalous data set, whether the run orders the models as the paper does
    summary = (res / "tables" / "table1_summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["demo_brats", "demo_mslub"]
    front = page[page.index("Does this run order the models as the paper does?"):]
    for line in summary:
        assert f"<li>{html.escape(line, quote=False)}</li>" in front, line

    assert planned_jobs(tmp_path, *allowed, *targets) == {}
    write_config(tmp_path, {"models": TINY["models"], "evaluate": {"qualitative_volumes": 2}})
    assert planned_jobs(tmp_path, *allowed, *targets) == {"qualitative": 2}
    # the run name is printed in the table and the figure titles, not in the Dice or loss plots
    write_config(tmp_path, {"models": TINY["models"], "run_name": "renamed"})
    assert planned_jobs(tmp_path, *allowed, *targets) == {"table": 1, "qualitative": 2, "pr_curves": 2}
