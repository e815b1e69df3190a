"""The paper's Table 1 from the per-volume evaluation files, with the paper's numbers beside ours.

Flow: `load_per_volume` (the per-volume files of every model, fold and data set, as one frame) ->
`aggregate_over_folds` (per fold the mean over volumes, then mean and std over folds) ->
`build_table1` (one row per model and source, numeric; `ordering_summary`: per anomalous data set one
sentence saying whether this run orders the models as the paper does) -> `to_csv` / `to_markdown` /
`to_latex` / `to_html` / `to_summary`.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from pddpm.errors import PddpmInputError
from pddpm.evaluate import aggregate
from pddpm.io import atomic_path

# Paper order first; models added later fall in after them in config order.
MODEL_LABELS = {"thresh": "Thresh", "ae": "AE", "vae": "VAE", "svae": "SVAE", "dae": "DAE",
                "fanogan": "f-AnoGAN", "ddpm": "DDPM", "pddpm": "pDDPM",
                # the follow-up paper's model (docs/cddpm.md), after the pDDPM paper's rows
                "cddpm": "cDDPM", "cddpm_nopretrain": "cDDPM (no pre-training)"}
KIND_LABELS = {"brats": "BraTS21", "mslub": "MSLUB", "ixi": "IXI"}
# the columns Table 1 shows per data set, by its role (the per-volume files hold more: pddpm.artefacts)
TABLE_METRICS = {"anomalous": ("dice", "auprc"), "healthy": ("recon_error",)}
METRIC_LABELS = {"dice": "Dice [%]", "auprc": "AUPRC [%]", "recon_error": "recon. error"}
# Dice and AUPRC are fractions in the eval files and percentages in the paper's table.
PERCENT_METRICS = {"dice", "auprc"}
# Models whose "reconstruction" is zero (the anomaly map is the intensity): their error says nothing.
NO_RECONSTRUCTION = {"thresh"}
PAPER_SOURCE = "paper"
OURS_SOURCE = "this run"
# Footnotes of the models whose rows need one (printed when the model ran)
MODEL_NOTES = {
    "vae": "VAE: reconstructs from the posterior mean (no sampling at inference).",
    "svae": ("SVAE: the paper's architecture is not published; this run's is ours: the VAE's slice encoder "
             "and decoder with a transformer encoder over the slice codes of windows of `svae.sequence_length` "
             "consecutive slices (docs/training.md, \"svae\"); it reconstructs from the posterior mean."),
    "cddpm": ("cDDPM: the model of Behrendt et al., arXiv 2312.04215 (not in the pDDPM paper); its encoder is "
              "pre-trained by a dense masked-image-modelling variant, not SparK (docs/cddpm.md). No paper row: "
              "the cDDPM paper's numbers are not in pddpm/data/reference_table1.csv yet (docs/cddpm.md, "
              "\"Reference numbers\")."),
    "cddpm_nopretrain": ("cDDPM (no pre-training): cDDPM with a randomly initialised encoder; no paper row "
                         "(as for cDDPM)."),
}


@dataclass(frozen=True)
class Dataset:
    """What the table needs to know of a data set from the config."""

    key: str
    kind: str
    role: str
    source: str
    n_subjects: int | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        return TABLE_METRICS[self.role]

    @property
    def title(self) -> str:
        kind = KIND_LABELS.get(self.kind, self.kind)
        return self.key if self.key.lower() == kind.lower() else f"{self.key} ({kind})"


def datasets_from_config(config: Mapping) -> list[Dataset]:
    """The evaluated data sets in table order: anomalous ones (config order), then the training set."""
    out = []
    for key, cfg in config["datasets"].items():
        if cfg["role"] == "anomalous":
            out.append(Dataset(key, cfg["kind"], "anomalous", cfg["source"], cfg.get("n_subjects")))
    train = config["train_dataset"]
    cfg = config["datasets"][train]
    out.append(Dataset(train, cfg["kind"], "healthy", cfg["source"], cfg.get("n_subjects")))
    return out


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def order_models(models: Iterable[str]) -> list[str]:
    known = list(MODEL_LABELS)
    models = list(dict.fromkeys(models))
    return sorted(models, key=lambda m: (known.index(m) if m in known else len(known), models.index(m)))


PerVolumeFiles = Mapping[tuple[str, int, str], "str | os.PathLike"]


def load_per_volume(files: PerVolumeFiles, datasets: Sequence[Dataset]) -> pd.DataFrame:
    """The per-volume files `(model, fold, data set key) -> path` of the given data sets as one frame.

    Columns: model, fold, dataset, subject, then the metrics of the files. Raises PddpmInputError naming
    every missing file at once (so a model or data set absent from the evaluation shows in one message),
    and any file without the columns its role needs, without rows, or with non-numeric metrics.
    """
    by_key = {d.key: d for d in datasets}
    files = {k: p for k, p in files.items() if k[2] in by_key}
    missing = [str(p) for p in files.values() if not Path(p).is_file()]
    if missing:
        listing = "\n  ".join(missing)
        raise PddpmInputError(
            f"evaluation results missing for {len(missing)} model/fold/data set combination(s):\n  {listing}\n"
            "Run the `metrics` rule for them (snakemake builds them as inputs of `table`), or remove the "
            "model from `models`, the fold from `folds_to_run` or the data set from `datasets` in the config.")
    return aggregate.collect(files, {key: d.metrics for key, d in by_key.items()})


def aggregate_over_folds(per_volume: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """Per fold the mean over volumes (NaN skipped), then mean and std over folds: the paper's ±.

    The evaluation stage's helpers (pddpm.evaluate.aggregate) do it, so the table and any other summary
    agree. Returns model, dataset, metric, mean, std (NaN for a single fold), n_folds."""
    return aggregate.across_folds(aggregate.fold_means(per_volume), ddof=ddof)


def load_reference(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's numbers (docs/spec.md section 8): method, label, dataset (a kind), metric, mean, std, source."""
    if path is None:
        with resources.as_file(resources.files("pddpm") / "data" / "reference_table1.csv") as p:
            return pd.read_csv(p)
    return pd.read_csv(path)


@dataclass
class Table1:
    """Numeric table (one row per model and source) plus the notes every rendering prints."""

    frame: pd.DataFrame
    datasets: list[Dataset]
    notes: list[str] = field(default_factory=list)
    run_name: str = ""
    # one sentence per anomalous data set: does this run order the models as the paper does? (`ordering_summary`)
    summary: list[str] = field(default_factory=list)

    def value_columns(self) -> list[tuple[Dataset, str]]:
        return [(d, m) for d in self.datasets for m in d.metrics]


def cohort_note(run_name: str, datasets: Sequence[Dataset]) -> str:
    listing = ", ".join(f"{d.key} ({d.source}, {d.role}"
                        + (f", {d.n_subjects} subjects" if d.n_subjects else "") + ")" for d in datasets)
    if any(d.source == "demo" for d in datasets):
        return (f"DEMO COHORT (run `{run_name}`): synthetic subjects made by this pipeline from the ICBM152 "
                f"template, small CPU-sized models. These numbers show that the pipeline runs end to end; "
                f"they are NOT comparable with the paper's rows. Data sets: {listing}.")
    return f"Run `{run_name}`. Data sets: {listing}."


def build_table1(summary: pd.DataFrame, reference: pd.DataFrame, datasets: Sequence[Dataset],
                 models: Sequence[str], run_name: str, ddof: int = 1) -> Table1:
    """Rows: for each model (paper order) ours, then the paper's if it has one. Columns: per data set
    and metric `{ds}_{metric}_mean` and `_std`; Dice and AUPRC in percent."""
    datasets = list(datasets)
    rows = []
    for model in order_models(models):
        ours = summary[summary["model"] == model]
        if ours.empty:
            raise PddpmInputError(f"no evaluation results for model `{model}`; it is in `models` of the config "
                                  "but not in the per-volume files given to the table")
        row = {"model": model, "label": model_label(model), "source": OURS_SOURCE,
               "n_folds": int(ours["n_folds"].max())}
        for ds, metric in ((d, m) for d in datasets for m in d.metrics):
            hit = ours[(ours["dataset"] == ds.key) & (ours["metric"] == metric)]
            if hit.empty:
                raise PddpmInputError(f"no `{metric}` results for model `{model}` on data set `{ds.key}`")
            scale = 100.0 if metric in PERCENT_METRICS else 1.0
            if metric == "recon_error" and model in NO_RECONSTRUCTION:
                scale = np.nan  # printed as n/a
            row[f"{ds.key}_{metric}_mean"] = float(hit["mean"].iloc[0]) * scale
            row[f"{ds.key}_{metric}_std"] = float(hit["std"].iloc[0]) * scale
        rows.append(row)
        ref = reference[reference["method"] == model]
        if not ref.empty:
            prow = {"model": model, "label": model_label(model), "source": PAPER_SOURCE, "n_folds": 5}
            for ds, metric in ((d, m) for d in datasets for m in d.metrics):
                hit = ref[(ref["dataset"] == ds.kind) & (ref["metric"] == metric)]
                prow[f"{ds.key}_{metric}_mean"] = float(hit["mean"].iloc[0]) if len(hit) else np.nan
                prow[f"{ds.key}_{metric}_std"] = float(hit["std"].iloc[0]) if len(hit) else np.nan
            rows.append(prow)
    frame = pd.DataFrame(rows)
    n_folds = int(summary["n_folds"].max())
    spread = (f"mean ± std (ddof={ddof}) over {n_folds} folds" if n_folds > 1
              else "a single fold, so no ± spread")
    source = reference["source"].dropna().iloc[0] if "source" in reference and len(reference) else "the paper"
    notes = [
        cohort_note(run_name, datasets),
        f"Rows `{OURS_SOURCE}`: Dice and AUPRC in %, per fold the mean over test volumes, then {spread}. "
        "Recon. error: mean absolute reconstruction error of the healthy test volumes (lower is better; "
        "n/a for Thresh, which reconstructs nothing).",
        f"Rows `{PAPER_SOURCE}`: {source}, on the real data sets ({', '.join(sorted(KIND_LABELS[k] for k in {d.kind for d in datasets if d.role == 'anomalous'} if k in KIND_LABELS))}); "
        "the paper reports no reconstruction error (n/a).",
    ]
    ran = set(models)
    notes += [note for model, note in MODEL_NOTES.items() if model in ran]
    table = Table1(frame=frame, datasets=datasets, notes=notes, run_name=run_name)
    table.summary = ordering_summary(table)
    return table


# ---------------------------------------------------------------------------------------------------------
# does this run order the models as the paper does?

def _order_text(models: Sequence[str], values: Mapping[str, float]) -> str:
    """`pDDPM > DDPM = Thresh`: models by value, best first ('=' for equal values at the table's precision)."""
    ranked = sorted(models, key=lambda m: -values[m])
    text = model_label(ranked[0])
    for a, b in zip(ranked, ranked[1:], strict=False):
        text += (" = " if round(values[a], 2) == round(values[b], 2) else " > ") + model_label(b)
    return text


def _swapped(models: Sequence[str], ours: Mapping[str, float], paper: Mapping[str, float]) -> list[tuple[str, str]]:
    """Pairs (a, b) that this run ranks a above b (or equal) while the paper ranks b above a, or the reverse;
    returned as (ours higher, paper higher)."""
    out = []
    for a, b in combinations(models, 2):
        mine, theirs = np.sign(round(ours[a] - ours[b], 2)), np.sign(paper[a] - paper[b])
        if mine != theirs:
            out.append((a, b) if theirs < 0 else (b, a))
    return out


def ordering_sentence(dataset: str, ours: Mapping[str, Mapping[str, float]],
                      paper: Mapping[str, Mapping[str, float]], metric_labels: Mapping[str, str]) -> str:
    """One sentence on `dataset`: per metric, this run's order of the models and whether it is the paper's.

    ours / paper: metric -> model -> value (finite values only; a model missing from `paper` has no paper
    row). Models are compared only where both a value of this run and the paper's exist."""
    clauses, same_orders, agree = [], [], []
    without = order_models({m for vals in ours.values() for m in vals} - {m for vals in paper.values() for m in vals})
    for metric, label in metric_labels.items():
        models = [m for m in order_models(ours.get(metric, {})) if m in paper.get(metric, {})]
        if len(models) < 2:
            continue
        mine, theirs = ours[metric], paper[metric]
        swapped = _swapped(models, mine, theirs)
        order = _order_text(models, mine)
        agree.append(not swapped)
        same_orders.append(order)
        if not swapped:
            clauses.append(f"{label} {order}, as in the paper")
        else:
            pairs = ", ".join(f"{model_label(a)} {'level with' if round(mine[a], 2) == round(mine[b], 2) else 'above'} "
                              f"{model_label(b)}" for a, b in swapped)
            n_pairs = len(models) * (len(models) - 1) // 2
            clauses.append(f"{label} {order}, the paper has {_order_text(models, theirs)} "
                           f"({len(swapped)} of {n_pairs} pairs swapped: {pairs})")
    if not clauses:
        ran = ", ".join(model_label(m) for m in order_models({m for vals in ours.values() for m in vals}))
        return (f"{dataset}: fewer than two of the models run ({ran}) have the paper's numbers; "
                "no ordering to compare.")
    if all(agree) and len(set(same_orders)) == 1 and len(clauses) > 1:
        names = " and ".join(metric_labels[m] for m in metric_labels)
        text = f"{dataset}: {same_orders[0]} in {names}, as in the paper"
    else:
        text = f"{dataset}: " + "; ".join(clauses)
    if without:
        text += f" ({', '.join(model_label(m) for m in without)} not in the paper's table)"
    return text + "."


def ordering_summary(table: Table1) -> list[str]:
    """One sentence per anomalous data set of `table`, computed from its numbers (`ordering_sentence`)."""
    frame = table.frame
    labels = {"dice": "Dice", "auprc": "AUPRC"}
    out = []
    for ds in (d for d in table.datasets if d.role == "anomalous"):
        per_source = {}
        for source in (OURS_SOURCE, PAPER_SOURCE):
            rows = frame[frame["source"] == source]
            per_source[source] = {
                metric: {m: float(v) for m, v in zip(rows["model"], rows[f"{ds.key}_{metric}_mean"], strict=True)
                         if np.isfinite(v)}
                for metric in ds.metrics}
        out.append(ordering_sentence(ds.key, per_source[OURS_SOURCE], per_source[PAPER_SOURCE],
                                     {m: labels.get(m, m) for m in ds.metrics}))
    return out


def format_cell(mean: float, std: float, fmt: str = ".2f", pm: str = " ± ") -> str:
    """`mean ± std`; just the mean when std is missing (one fold, or the paper gives none)."""
    if mean is None or math.isnan(mean):
        return "n/a"
    text = format(mean, fmt)
    if std is not None and not math.isnan(std):
        text += pm + format(std, fmt)
    return text


def _fmt(metric: str) -> str:
    # percentages to two decimals like the paper; errors to three significant digits
    return ".2f" if metric in PERCENT_METRICS else ".3g"


def display_frame(table: Table1, pm: str = " ± ") -> pd.DataFrame:
    """Strings as printed: `mean ± std` per data set and metric."""
    out = pd.DataFrame({"Model": table.frame["label"], "Source": table.frame["source"]})
    for ds, metric in table.value_columns():
        out[f"{ds.title} {METRIC_LABELS[metric]}"] = [
            format_cell(r[f"{ds.key}_{metric}_mean"], r[f"{ds.key}_{metric}_std"], _fmt(metric), pm)
            for _, r in table.frame.iterrows()]
    return out


def to_csv(table: Table1, path: str | os.PathLike) -> None:
    """Numeric, one row per model and source; the run and cohort in columns so the file stands alone."""
    frame = table.frame.copy()
    frame.insert(0, "run_name", table.run_name)
    frame.insert(1, "demo_cohort", any(d.source == "demo" for d in table.datasets))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


def to_markdown(table: Table1) -> str:
    body = display_frame(table).to_markdown(index=False, disable_numparse=True)
    notes = "\n".join(f"- {n}" for n in table.notes[1:])
    first = table.notes[0]
    lead = f"> **{first}**" if first.startswith("DEMO") else first
    order = ""
    if table.summary:
        order = "\n\n**Ordering against the paper** (computed from the rows above):\n\n" + "\n".join(
            f"- {line}" for line in table.summary)
    return f"# Table 1: anomaly segmentation (run `{table.run_name}`)\n\n{lead}\n\n{body}\n\n{notes}{order}\n"


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("`", "")):
        text = text.replace(a, b)
    return text


def to_latex(table: Table1) -> str:
    """A booktabs table; the paper's rows set in grey italics, our rows plain."""
    disp = display_frame(table, pm=" ± ")
    cols = list(disp.columns)
    lines = [f"% Table 1 of run {table.run_name}, written by pddpm-uad (pddpm/report/table.py)",
             *[f"% {n}" for n in table.notes],
             *[f"% ordering against the paper: {line}" for line in table.summary],
             r"% needs \usepackage{booktabs,xcolor}",
             r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{ll" + "r" * (len(cols) - 2) + "}", r"\toprule",
             " & ".join(_tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for (_, row), source in zip(disp.iterrows(), table.frame["source"], strict=True):
        cells = [_tex_escape(str(v)) for v in row]
        if source == PAPER_SOURCE:
            cells = [r"\textcolor{gray}{\textit{" + c + "}}" for c in cells]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + _tex_escape(" ".join(table.notes)) + "}", r"\label{tab:table1}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table1) -> str:
    """A standalone page for the Snakemake report, which shows HTML inline (a CSV only as a download)."""
    disp = display_frame(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in disp.columns)
    rows = []
    for (_, row), source in zip(disp.iterrows(), table.frame["source"], strict=True):
        cls = ' class="paper"' if source == PAPER_SOURCE else ""  # grey italics, as in the LaTeX table
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    body = f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes[1:])
    if table.summary:
        notes += "<li>Ordering against the paper (computed from the rows above):<ul>" + "".join(
            f"<li>{html.escape(line)}</li>" for line in table.summary) + "</ul></li>"
    lead = html.escape(table.notes[0])
    lead = f'<p class="demo"><b>{lead}</b></p>' if lead.startswith("DEMO") else f"<p>{lead}</p>"
    style = ("body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse} "
             "th,td{padding:4px 10px;text-align:right} th:nth-child(-n+2),td:nth-child(-n+2){text-align:left} "
             "thead{border-bottom:1px solid #333} tr.paper td{color:#777;font-style:italic} "
             "tr.paper{border-bottom:1px solid #ccc} .demo{color:#a00}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Table 1 ({html.escape(table.run_name)})"
            f"</title><style>{style}</style></head><body>\n<h3>Table 1: anomaly segmentation, run "
            f"<code>{html.escape(table.run_name)}</code></h3>\n{lead}\n{body}\n<ul>{notes}</ul>\n</body></html>\n")


def to_summary(table: Table1) -> str:
    """The ordering sentences, one per line (the report's front page shows them)."""
    return "".join(f"{line}\n" for line in table.summary)


def write_table1(table: Table1, csv_path, md_path, tex_path, html_path=None, summary_path=None) -> None:
    to_csv(table, csv_path)
    texts = [(md_path, to_markdown(table)), (tex_path, to_latex(table))]
    if html_path:
        texts.append((html_path, to_html(table)))
    if summary_path:
        texts.append((summary_path, to_summary(table)))
    for path, text in texts:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)


def make_table1(per_volume_files: PerVolumeFiles, config: Mapping, ddof: int = 1,
                reference_path=None) -> Table1:
    """Everything from the per-volume files `(model, fold, data set) -> path` and the (validated) config:
    the `table` rule's one call."""
    datasets = datasets_from_config(config)
    models = list(config["models"])
    per_volume = load_per_volume(per_volume_files, datasets)
    summary = aggregate_over_folds(per_volume, ddof=ddof)
    return build_table1(summary, load_reference(reference_path), datasets, models, config["run_name"], ddof)
