"""Tables in the paper's layout: published rows beside ours, as markdown, LaTeX and CSV.

Units: the store keeps VBench scores as fractions in [0, 1]; the papers print them ×100. Every
VBench/metric-spec score (ours and the published rows, whose CSV ``unit_note`` says ``x100``) is shown
×100 and the column header says so. FPS and latencies are shown as they are. Ours print as
``mean ± h``: the mean over prompts and h, the half-width of its 95 % percentile-bootstrap interval
(the exact bounds are in the CSV). Arrows come from metric directions (deepforcing/metrics/specs.py).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deepforcing.atomic import write_text_atomic
from deepforcing.errors import ConfigError
from deepforcing.metrics.specs import SPECS

from .data import Results
from .stats import aggregate, paired_differences

PUBLISHED_COLUMNS = ["source", "table", "length_s", "prompt_set", "method", "training", "metric", "value",
                     "unit_note"]
#: metric order of Deep Forcing's Table 1, then the rest of ours
METRIC_ORDER = ["fps", "dynamic_degree", "motion_smoothness", "overall_consistency", "imaging_quality",
                "aesthetic_quality", "subject_consistency", "background_consistency", "temporal_flickering",
                "clip_score"]
LABELS = {
    "fps": "Throughput (FPS)", "dynamic_degree": "Dynamic Degree", "motion_smoothness": "Motion Smoothness",
    "overall_consistency": "Overall Consistency", "imaging_quality": "Imaging Quality",
    "aesthetic_quality": "Aesthetic Quality", "subject_consistency": "Subject Consistency",
    "background_consistency": "Background Consistency", "temporal_flickering": "Temporal Flickering",
    "clip_score": "CLIP Score", "visual_stability": "Visual Stability", "latency_min_s": "Latency min (s)",
    "latency_max_s": "Latency max (s)", "vbench_total": "Total", "vbench_quality": "Quality",
    "vbench_semantic": "Semantic", "user_study_pref_color_consistency": "Color Cons.",
    "user_study_pref_dynamic_motion": "Dyn. Motion", "user_study_pref_subject_consistency": "Subject Cons.",
    "user_study_pref_overall_quality": "Overall Quality",
}
#: directions of published metrics that are not one of our metric specs
OTHER_DIRECTIONS = {"fps": "higher", "latency_min_s": "lower", "latency_max_s": "lower", "visual_stability": "higher",
                    "vbench_total": "higher", "vbench_quality": "higher", "vbench_semantic": "higher"}
DRIFT = "/abs_drift"


def base_metric(metric: str) -> str:
    return metric[: -len(DRIFT)] if metric.endswith(DRIFT) else metric


def direction(metric: str) -> str | None:
    if metric.endswith(DRIFT):
        return "lower"  # |first - last| segment: less drift is better
    if metric in SPECS:
        return SPECS[metric].direction
    if metric.startswith(("clip_score_", "user_study_pref_")):
        return "higher"
    return OTHER_DIRECTIONS.get(metric)


def scale(metric: str) -> float:
    """Display factor of OUR values: metric-spec scores are fractions, shown ×100."""
    return 100.0 if base_metric(metric) in SPECS else 1.0


def label(metric: str) -> str:
    m = base_metric(metric)
    text = LABELS.get(m) or m.replace("_", " ").title()
    return f"|Δ drift| {text}" if metric.endswith(DRIFT) else text


def header(metric: str) -> str:
    arrow = {"higher": " ↑", "lower": " ↓"}.get(direction(metric) or "", "")
    unit = " (×100)" if scale(metric) == 100 else ""
    return f"{label(metric)}{unit}{arrow}"


def metric_sort_key(metric: str) -> tuple:
    m = base_metric(metric)
    pos = METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER)
    return (metric.endswith(DRIFT), pos, m)


# --------------------------------------------------------------------------------------------------- published


#: The published numbers we compare against (Self Forcing, LongLive, Rolling Forcing, Deep Forcing papers),
#: shipped with the package: one row per (paper, table, system, metric), with its source.
PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "data" / "published_results.csv"


def default_published_path() -> Path:
    env = os.environ.get("DEEPFORCING_PUBLISHED")
    return Path(env) if env else PUBLISHED_CSV


def read_published(path: str | os.PathLike | None = None) -> pd.DataFrame:
    p = Path(path) if path is not None else default_published_path()
    if not p.exists():
        raise ConfigError(f"published results CSV {p} not found; pass --published-csv PATH or set "
                          "DEEPFORCING_PUBLISHED")
    df = pd.read_csv(p)
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{p}: not a published-results CSV (missing columns: {', '.join(missing)})")
    return df


def slug(name: str) -> str:
    """File-name form of a table name: "Deep Forcing Table 1" -> "deep_forcing_table1"."""
    return re.sub(r"_(?=\d)", "", re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))


def resolve_table(published: pd.DataFrame, name: str) -> str:
    """The CSV's table name for ``name`` given as printed ("Deep Forcing Table 1") or as a slug."""
    names = list(dict.fromkeys(published["table"]))
    for t in names:
        if re.sub(r"[^a-z0-9]", "", name.lower()) == re.sub(r"[^a-z0-9]", "", t.lower()):
            return t
    raise ConfigError(f"unknown table {name!r}; choose one of: {', '.join(slug(t) for t in names)}")


# --------------------------------------------------------------------------------------------------- table model

TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
       "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
       "↓": r"$\downarrow$", "×": r"$\times$", "−": "$-$", "Δ": r"$\Delta$", "·": r"$\cdot$", "–": "--",
       "|": r"\textbar{}"}


def latex_escape(s: object) -> str:
    return "".join(TEX.get(ch, ch) for ch in str(s))


@dataclass
class Cell:
    value: float
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    signed: bool = False
    digits: int = 2

    def text(self, pm: str = "±", minus: str = "−") -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "–"
        nums = [abs(x) for x in (self.value, self.lo, self.hi) if x is not None and not math.isnan(x)]
        big = max(nums, default=0.0)
        # two decimals as in the papers; more when every number is small (tiny drifts and differences)
        digits = self.digits if big == 0 or big >= 0.1 else max(self.digits, 1 - math.floor(math.log10(big)))

        def num(v: float, signed: bool) -> str:
            t = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
            if float(t) == 0:  # no sign on a number that rounds to zero
                t = t.lstrip("+-")
            return t.replace("-", minus)

        s = num(self.value, self.signed)
        if self.lo is None or self.n is None:
            return s
        if self.signed:
            return f"{s} [{num(self.lo, True)}, {num(self.hi, True)}]"
        if self.n <= 1:
            return f"{s} (n=1)"
        return f"{s} {pm} {(self.hi - self.lo) / 2:.{digits}f}"


@dataclass
class Row:
    setting: str
    model: str
    source: str  # "published" | "ours"
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Table:
    name: str  # file stem
    title: str
    note: str
    columns: list[str]  # metric keys, in display order
    rows: list[Row]
    first_header: tuple[str, str] = ("Setting", "Model")

    def frame(self) -> pd.DataFrame:
        """Display strings, paper layout, headers with units and arrows."""
        data = [[r.setting, r.model, *[(r.cells[c].text() if c in r.cells else "–") for c in self.columns]]
                for r in self.rows]
        return pd.DataFrame(data, columns=[*self.first_header, *[header(c) for c in self.columns]])

    def numeric(self) -> pd.DataFrame:
        """Wide numeric CSV: value, lo, hi, n per metric (display units, i.e. ×100 where headers say so)."""
        out = []
        for r in self.rows:
            d = {self.first_header[0].lower(): r.setting, self.first_header[1].lower(): r.model, "source": r.source}
            for c in self.columns:
                cell = r.cells.get(c)
                key = c.replace("/", "_") + ("_x100" if scale(c) == 100 else "")
                d[key] = cell.value if cell else None
                d[f"{key}_ci_lo"] = cell.lo if cell else None
                d[f"{key}_ci_hi"] = cell.hi if cell else None
                d[f"{key}_n"] = cell.n if cell else None
            out.append(d)
        return pd.DataFrame(out)

    def markdown(self) -> str:
        df = self.frame()
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines = [f"### {self.title}", "", self.note, "",
                 "| " + " | ".join(esc(c) for c in df.columns) + " |",
                 "|" + "|".join(["---"] * 2 + ["---:"] * (len(df.columns) - 2)) + "|"]
        lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        tex = latex_escape
        df = self.frame()
        spec = "ll" + "r" * (len(df.columns) - 2)
        lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{tex(self.title)}. {tex(self.note)}}}",
                 f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex(c) for c in df.columns) + r" \\",
                 r"\midrule"]
        prev_source = None
        for r, row in zip(self.rows, df.itertuples(index=False), strict=True):
            if prev_source is not None and r.source != prev_source:
                lines.append(r"\midrule")
            prev_source = r.source
            lines.append(" & ".join(tex(v) for v in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"md": out / f"{self.name}.md", "tex": out / f"{self.name}.tex", "csv": out / f"{self.name}.csv"}
        write_text_atomic(paths["md"], self.markdown())
        write_text_atomic(paths["tex"], self.latex())
        write_text_atomic(paths["csv"], self.numeric().to_csv(index=False))
        return paths


# --------------------------------------------------------------------------------------------------- builders

CI_NOTE = ("ours: mean over prompts ± half-width of the 95 % percentile-bootstrap interval "
           "(exact bounds and n in the CSV)")


def our_metrics(results: Results, drift: bool = False) -> list[str]:
    ms = [m for m in dict.fromkeys(results.videos["metric"])]
    if drift:
        ms += [m + DRIFT for m in ms if m != "fps"
               and results.videos.loc[results.videos["metric"] == m, "abs_drift"].notna().any()]
    return sorted(ms, key=metric_sort_key)


def _agg_all(results: Results, n_boot: int, seed: int) -> pd.DataFrame:
    score = aggregate(results.videos, "score", n_boot=n_boot, seed=seed)
    v = results.videos[results.videos["metric"] != "fps"]
    drift = aggregate(v, "abs_drift", n_boot=n_boot, seed=seed)
    drift["metric"] = drift["metric"] + DRIFT
    return pd.concat([score, drift], ignore_index=True)


def _our_rows(results: Results, agg: pd.DataFrame, columns: list[str]) -> list[Row]:
    rows = []
    for p in results.done:
        v = results.videos[(results.videos["label"] == p.label) & (results.videos["metric"] == "fps")]
        secs = v["video_seconds"].dropna()
        setting = f"ours · {p.model_kind} · {secs.mean():.1f} s · {len(v)} prompts" if len(secs) else "ours"
        row = Row(setting=setting, model=p.label, source="ours")
        a = agg[agg["label"] == p.label].set_index("metric")
        for c in columns:
            if c in a.index and a.loc[c, "n"] > 0:
                k = scale(c)
                row.cells[c] = Cell(a.loc[c, "mean"] * k, a.loc[c, "lo"] * k, a.loc[c, "hi"] * k, int(a.loc[c, "n"]))
        rows.append(row)
    return rows


def paper_table(published: pd.DataFrame, table: str, results: Results, length: float | None = None,
                n_boot: int = 10_000, seed: int = 0) -> Table:
    """The published table ``table`` (rows and columns in the paper's order), then one row per point of ours.

    Metrics of ours that the paper's table lacks are appended as extra columns.
    """
    name = resolve_table(published, table)
    pub = published[published["table"] == name]
    if length is not None:
        pub = pub[pub["length_s"] == length]
        if pub.empty:
            lengths = sorted(published.loc[published["table"] == name, "length_s"].dropna().unique())
            raise ConfigError(f"{name} has no rows for length {length:g} s; lengths: "
                              + ", ".join(f"{x:g}" for x in lengths))
    columns = list(dict.fromkeys(pub["metric"]))
    columns += [m for m in our_metrics(results) if m not in columns]
    rows: list[Row] = []
    for (length_s, method), g in pub.groupby(["length_s", "method"], sort=False, dropna=False):
        training = str(g["training"].iloc[0])
        setting = f"{length_s:g} s · {training}" if not pd.isna(length_s) else training
        row = Row(setting=setting, model=str(method), source="published")
        for _, r in g.iterrows():
            value = float(r["value"])
            decimals = len(repr(value).split(".")[1]) if "." in repr(value) else 0
            row.cells[r["metric"]] = Cell(value, digits=max(2, decimals))  # as printed (0.770 -> 0.770)
        rows.append(row)
    agg = _agg_all(results, n_boot, seed)
    rows += _our_rows(results, agg, columns)
    sources = "; ".join(dict.fromkeys(pub["source"]))
    units = "; ".join(f"{m}: {u}" for m, u in dict.fromkeys(zip(pub["metric"], pub["unit_note"], strict=True)))
    prompts = "; ".join(str(x) for x in dict.fromkeys(pub["prompt_set"].dropna()))
    note = (f"Published rows: {sources} ({prompts}); units {units}. Our scores are fractions in [0, 1], "
            f"shown ×100; our FPS is generation throughput on the machine that ran the sweep. {CI_NOTE}.")
    return Table(name=slug(name), title=f"{name}: published vs ours", note=note, columns=columns, rows=rows)


def ours_table(results: Results, n_boot: int = 10_000, seed: int = 0) -> Table:
    """All our metrics and their |first - last segment| drift, one row per finished point."""
    columns = our_metrics(results, drift=True)
    rows = _our_rows(results, _agg_all(results, n_boot, seed), columns)
    note = ("Scores ×100 (stored as fractions in [0, 1]); |Δ drift| = |first − last segment score| per video; "
            f"{CI_NOTE}.")
    return Table(name="ours", title="Our points, all metrics", note=note, columns=columns, rows=rows)


def paired_table(results: Results, baseline: str, n_boot: int = 10_000, seed: int = 0) -> Table:
    """Per point and metric: mean over prompts of (point − baseline), with a 95 % bootstrap interval."""
    v = results.videos
    diffs = [paired_differences(v, baseline, "score", n_boot=n_boot, seed=seed)]
    d = paired_differences(v[v["metric"] != "fps"], baseline, "abs_drift", n_boot=n_boot, seed=seed)
    d["metric"] = d["metric"] + DRIFT
    diffs.append(d)
    diff = pd.concat(diffs, ignore_index=True)
    columns = [m for m in our_metrics(results, drift=True) if m in set(diff["metric"])]
    rows = []
    for p in results.done:
        if p.label == baseline:
            continue
        row = Row(setting=f"− {baseline}", model=p.label, source="ours")
        a = diff[diff["label"] == p.label].set_index("metric")
        for c in columns:
            if c in a.index and a.loc[c, "n"] > 0:
                k = scale(c)
                row.cells[c] = Cell(a.loc[c, "diff"] * k, a.loc[c, "lo"] * k, a.loc[c, "hi"] * k,
                                    int(a.loc[c, "n"]), signed=True)
        rows.append(row)
    note = (f"Paired differences (point − {baseline}) over the prompts both scored: mean [95 % percentile-bootstrap "
            "interval]; ×100 where the header says so; arrows give the better direction of the metric itself.")
    return Table(name=f"paired_vs_{slug(baseline)}", title=f"Paired differences against {baseline}", note=note,
                 columns=columns, rows=rows, first_header=("Difference", "Model"))
