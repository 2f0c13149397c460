"""Agreement between automatic and manual measurements: Wilcoxon, Pearson, ICC, Bland–Altman.

- **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, two-sided) on the paired values: is there a systematic
  difference?
- **Pearson correlation** (``scipy.stats.pearsonr``).
- **Intraclass correlation** from the two-way ANOVA mean squares of the n × k table (n subjects, k raters/methods):
  ``MSR`` (rows), ``MSC`` (columns), ``MSE`` (residual), ``MSW`` (within rows). The form reported as ``icc`` is
  **ICC(A,1)**: two-way random effects, absolute agreement, single measures (McGraw KO, Wong SP. Forming inferences
  about some intraclass correlation coefficients. Psychol Methods 1996;1:30–46), identical to **ICC(2,1)** of Shrout
  PE, Fleiss JL. Intraclass correlations: uses in assessing rater reliability. Psychol Bull 1979;86:420–428:

      ICC(A,1) = (MSR − MSE) / (MSR + (k − 1) MSE + k (MSC − MSE) / n)

  Also given: ICC(1,1) = (MSR − MSW) / (MSR + (k − 1) MSW), ICC(C,1) = ICC(3,1) = (MSR − MSE) / (MSR + (k − 1) MSE)
  and the k-rater averages. The 95 % confidence interval of ICC(A,1) uses McGraw & Wong's (1996) F-distribution
  approximation with Satterthwaite degrees of freedom. The point estimates are tested against Shrout & Fleiss's
  worked example (6 targets × 4 judges: ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71).
- **Bland–Altman**: differences ``auto − manual``; bias = their mean, 95 % limits of agreement = bias ± 1.96 SD
  (Bland JM, Altman DG. Lancet 1986;i:307–310).

Tables: CSV files with columns ``Case, Metric, Side, Value`` (``Unit``, ``Flag``, ``QC`` ignored) — the table written
by ``spinemorph foramen measure`` — or a manual-reference JSON in the layout of the SPIDER ``foramen_manual.json``
(``{case: {"left"|"right": {"height_mm", "width_mm", "area_mm2"}, "posterior_disc_height_mm"}}``). Rows are paired on
(Case, Metric, Side); a case name of one table that matches no case of the other is paired with the case whose name
is its first ``_``-separated token (``18_t2_SPACE`` ↔ ``18``) when that is unique.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
from scipy import stats

from spinemorph.atomic import atomic_path, atomic_write_text
from spinemorph.errors import InputError
from spinemorph.stats import bland_altman, pearson, ratio  # bland_altman: also this module's public name

log = logging.getLogger(__name__)

#: fewest paired values for which a metric's agreement statistics are computed (SD, Pearson r and ICC need 2)
MIN_PAIRS = 2

UNITS = {
    "foraminal_height": "mm",
    "foraminal_width": "mm",
    "foraminal_area": "mm2",
    "posterior_disc_height": "mm",
}


# ---------------------------------------------------------------------------------------------------- ICC
def anova_mean_squares(ratings) -> dict:
    """Two-way ANOVA mean squares of an ``(n subjects, k raters)`` table (no missing values)."""
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise InputError(f"ICC needs at least 2 subjects × 2 raters, got a table of shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError("ICC table holds missing or non-finite values")
    n, k = y.shape
    g = y.mean()
    ssr = k * np.sum((y.mean(axis=1) - g) ** 2)
    ssc = n * np.sum((y.mean(axis=0) - g) ** 2)
    sst = np.sum((y - g) ** 2)
    sse = sst - ssr - ssc
    return {
        "n": n,
        "k": k,
        "MSR": ssr / (n - 1),
        "MSC": ssc / (k - 1),
        "MSE": sse / ((n - 1) * (k - 1)),
        "MSW": (ssc + sse) / (n * (k - 1)),
    }


def icc_all(ratings) -> dict:
    """All six Shrout & Fleiss / McGraw & Wong single and average forms.

    Returns
    -------
    dict
        ``ICC(1,1)``, ``ICC(A,1)`` (= ICC(2,1)), ``ICC(C,1)`` (= ICC(3,1)), ``ICC(1,k)``, ``ICC(A,k)``, ``ICC(C,k)``
        and the mean squares.
    """
    m = anova_mean_squares(ratings)
    n, k, msr, msc, mse, msw = m["n"], m["k"], m["MSR"], m["MSC"], m["MSE"], m["MSW"]
    return {
        "ICC(1,1)": ratio(msr - msw, msr + (k - 1) * msw),
        "ICC(A,1)": ratio(msr - mse, msr + (k - 1) * mse + k * (msc - mse) / n),
        "ICC(C,1)": ratio(msr - mse, msr + (k - 1) * mse),
        "ICC(1,k)": ratio(msr - msw, msr),
        "ICC(A,k)": ratio(msr - mse, msr + (msc - mse) / n),
        "ICC(C,k)": ratio(msr - mse, msr),
        "mean_squares": m,
    }


def icc_a1(ratings, alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
    """ICC(A,1) (two-way random, absolute agreement, single measures) and its ``1 - alpha`` confidence interval.

    The interval follows McGraw & Wong (1996), with Satterthwaite's approximate degrees of freedom.
    """
    m = anova_mean_squares(ratings)
    n, k, msr, msc, mse = m["n"], m["k"], m["MSR"], m["MSC"], m["MSE"]
    icc = ratio(msr - mse, msr + (k - 1) * mse + k * (msc - mse) / n)
    if not np.isfinite(icc) or icc >= 1.0 or mse <= 0:
        return icc, (float("nan"), float("nan"))
    a = k * icc / (n * (1 - icc))
    b = 1 + k * icc * (n - 1) / (n * (1 - icc))
    den = (a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1))
    if den <= 0:
        return icc, (float("nan"), float("nan"))
    v = (a * msc + b * mse) ** 2 / den
    fl = stats.f.ppf(1 - alpha / 2, n - 1, v)
    fu = stats.f.ppf(1 - alpha / 2, v, n - 1)
    lo = n * (msr - fl * mse) / (fl * (k * msc + (k * n - k - n) * mse) + n * msr)
    hi = n * (fu * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fu * msr)
    return icc, (float(lo), float(hi))


# ---------------------------------------------------------------------------------------------------- pairs
@dataclasses.dataclass
class AgreementStats:
    """Agreement of one metric (auto vs manual)."""

    metric: str
    unit: str
    n: int
    mean_auto: float
    mean_manual: float
    bias: float
    sd_diff: float
    loa_low: float
    loa_high: float
    mae: float
    pearson_r: float
    pearson_p: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    icc_a1: float
    icc_a1_ci95: tuple
    icc_c1: float
    note: str = ""
    #: mean of |auto − manual| / manual × 100 (%)
    mean_abs_pct: float = float("nan")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["icc_a1_ci95"] = list(self.icc_a1_ci95)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def compare_values(auto, manual, metric: str = "", unit: str | None = None) -> AgreementStats:
    """All agreement statistics of paired values.

    Raises
    ------
    InputError
        Unequal lengths, fewer than 2 pairs or non-finite values.
    """
    a, m = np.asarray(auto, dtype=float).ravel(), np.asarray(manual, dtype=float).ravel()
    if a.shape != m.shape:
        raise InputError(f"{metric or 'values'}: {len(a)} automatic vs {len(m)} manual values; they must be paired")
    if len(a) < 2:
        raise InputError(f"{metric or 'values'}: need at least 2 paired values for agreement statistics, got {len(a)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(m))):
        raise InputError(f"{metric or 'values'}: missing or non-finite values among the pairs")
    notes = []
    ba = bland_altman(a, m)
    r, p = pearson(a, m)
    if np.ptp(a) == 0 or np.ptp(m) == 0:
        notes.append("Pearson undefined (constant values)")
    if np.all(a - m == 0):
        w, wp = 0.0, 1.0
        notes.append("all differences are zero (Wilcoxon p set to 1)")
    else:
        res = stats.wilcoxon(a, m)
        w, wp = float(res.statistic), float(res.pvalue)
    table = np.column_stack([a, m])
    icc, ci = icc_a1(table)
    icc_c = icc_all(table)["ICC(C,1)"]
    return AgreementStats(
        metric=metric,
        unit=unit if unit is not None else UNITS.get(metric, ""),
        n=int(len(a)),
        mean_auto=float(a.mean()),
        mean_manual=float(m.mean()),
        bias=ba["bias"],
        sd_diff=ba["sd"],
        loa_low=ba["loa_low"],
        loa_high=ba["loa_high"],
        mae=float(np.mean(np.abs(a - m))),
        pearson_r=r,
        pearson_p=p,
        wilcoxon_statistic=w,
        wilcoxon_p=wp,
        icc_a1=float(icc),
        icc_a1_ci95=ci,
        icc_c1=float(icc_c),
        note="; ".join(notes),
        mean_abs_pct=float(np.mean(np.abs(a - m) / np.abs(m)) * 100.0) if np.all(m != 0) else float("nan"),
    )


# ---------------------------------------------------------------------------------------------------- tables
_JSON_METRICS = {"height_mm": "foraminal_height", "width_mm": "foraminal_width", "area_mm2": "foraminal_area"}


def read_manual_json(path: str | os.PathLike) -> dict:
    """Read a manual-reference JSON (layout of SPIDER ``foramen_manual.json``) → ``{(case, metric, side): value}``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read manual reference {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected an object {{case: {{left, right}}}}")
    out = {}
    for case, entry in doc.items():
        if not isinstance(entry, dict):
            continue
        for side in ("left", "right"):
            m = entry.get(side)
            if not isinstance(m, dict):
                continue
            for key, metric in _JSON_METRICS.items():
                v = m.get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    out[(str(case), metric, side)] = float(v)
        v = entry.get("posterior_disc_height_mm")
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[(str(case), "posterior_disc_height", "midline")] = float(v)
    if not out:
        raise InputError(f"{path} holds no manual measurements (height_mm / width_mm / area_mm2 per case and side)")
    return out


def read_measurement_table(path: str | os.PathLike) -> dict:
    """Read a measurement CSV (or a manual-reference JSON, :func:`read_manual_json`) → ``{(case, metric, side): value}``.

    Needs columns ``Metric``, ``Side``, ``Value`` (``Case`` optional, default ''). Empty values are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table {path} does not exist")
    if path.suffix.lower() == ".json":
        return read_manual_json(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read table {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    missing = [c for c in ("metric", "side", "value") if c not in cols]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}; expected Case, Metric, Side, Value")
    out = {}
    for i, row in enumerate(reader, start=2):
        val = (row.get(cols["value"]) or "").strip()
        if val == "":
            continue
        try:
            v = float(val)
        except ValueError:
            raise InputError(f"{path} line {i}: value {val!r} is not a number") from None
        key = (
            (row.get(cols["case"]) or "").strip() if "case" in cols else "",
            (row.get(cols["metric"]) or "").strip(),
            (row.get(cols["side"]) or "").strip(),
        )
        if key in out:
            raise InputError(f"{path} line {i}: duplicate row for case {key[0]!r}, {key[1]}, {key[2]}")
        out[key] = v
    if not out:
        raise InputError(f"{path} holds no measurements")
    return out


def _match_cases(auto: dict, manual: dict) -> dict:
    """Rename cases of ``auto`` that match no manual case to the manual case equal to their first ``_`` token."""
    mcases = {k[0] for k in manual}
    acases = {k[0] for k in auto}
    ren = {}
    for c in acases - mcases:
        tok = c.split("_")[0]
        hits = [a for a in acases if a.split("_")[0] == tok]
        if tok in mcases and len(hits) == 1:
            ren[c] = tok
    return {(ren.get(k[0], k[0]), k[1], k[2]): v for k, v in auto.items()} if ren else auto


def pair_tables(auto: dict, manual: dict) -> dict:
    """Pair two tables by (case, metric, side) → ``{metric: (keys, auto_values, manual_values)}``."""
    auto = _match_cases(auto, manual)
    common = sorted(set(auto) & set(manual))
    if not common:
        raise InputError("the two tables share no (Case, Metric, Side) rows; check the case names")
    out = {}
    for key in common:
        ks, a, m = out.setdefault(key[1], ([], [], []))
        ks.append(key)
        a.append(auto[key])
        m.append(manual[key])
    return {k: (ks, np.array(a), np.array(m)) for k, (ks, a, m) in out.items()}


def compare_tables(auto_path, manual_path) -> tuple[dict, dict]:
    """Agreement per metric of two measurement CSVs → (``{metric: AgreementStats}``, paired data)."""
    pairs = pair_tables(read_measurement_table(auto_path), read_measurement_table(manual_path))
    res = {}
    for metric, (_, a, m) in pairs.items():
        if len(a) >= MIN_PAIRS:
            res[metric] = compare_values(a, m, metric)
    if not res:
        raise InputError(f"fewer than {MIN_PAIRS} paired values for every metric; agreement statistics need at least "
                         f"{MIN_PAIRS} cases")
    for metric, reason in skipped_metrics(res, pairs).items():
        log.warning("agreement: %s skipped: %s", metric, reason)
    return res, pairs


def skipped_metrics(results: dict, pairs: dict) -> dict:
    """``{metric: reason}`` of the paired metrics that have no statistics in ``results`` (fewer than
    :data:`MIN_PAIRS` paired values); :func:`write_agreement_report` records them in its outputs."""
    return {
        metric: f"only {len(a)} paired value(s); agreement statistics need at least {MIN_PAIRS}"
        for metric, (_, a, _m) in pairs.items()
        if metric not in results
    }


def plot_agreement(st: AgreementStats, auto, manual, path: str | os.PathLike) -> Path:
    """PNG with the scatter plot (identity line) and the Bland–Altman plot of one metric (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, m = np.asarray(auto, float), np.asarray(manual, float)
    ba = bland_altman(a, m)
    unit = st.unit.replace("mm2", "mm²")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    lo, hi = float(min(a.min(), m.min())), float(max(a.max(), m.max()))
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    ax1.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="identity")
    ax1.scatter(m, a, s=22, color="tab:blue")
    ax1.set_xlabel(f"manual ({unit})")
    ax1.set_ylabel(f"automatic ({unit})")
    ax1.set_title(f"{st.metric}: r = {st.pearson_r:.3f}, ICC(A,1) = {st.icc_a1:.3f}")
    ax1.legend(loc="upper left")
    ax2.scatter(ba["mean"], ba["diff"], s=22, color="tab:orange")
    for y, style, lab in ((st.bias, "-", f"bias {st.bias:.2f}"), (st.loa_low, "--", f"-1.96 SD {st.loa_low:.2f}"), (st.loa_high, "--", f"+1.96 SD {st.loa_high:.2f}")):
        if math.isfinite(y):
            ax2.axhline(y, color="k", ls=style, lw=1)
            ax2.annotate(lab, (1.0, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
    ax2.set_xlabel(f"mean of automatic and manual ({unit})")
    ax2.set_ylabel(f"automatic − manual ({unit})")
    ax2.set_title(f"Bland–Altman (n = {st.n}), Wilcoxon p = {st.wilcoxon_p:.3g}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


STATS_COLUMNS = [
    "metric", "unit", "n", "mean_auto", "mean_manual", "bias", "sd_diff", "loa_low", "loa_high", "mae",
    "pearson_r", "pearson_p", "wilcoxon_statistic", "wilcoxon_p", "icc_a1", "icc_a1_ci95_low", "icc_a1_ci95_high",
    "icc_c1", "note", "mean_abs_pct",
]  # fmt: skip


def write_agreement_report(results: dict, pairs: dict, out_dir: str | os.PathLike, sources: dict | None = None) -> dict:
    """Write ``agreement.json``, ``agreement.csv``, ``pairs.csv`` and ``agreement_<metric>.png`` into ``out_dir``.

    Paired metrics without statistics (fewer than :data:`MIN_PAIRS` pairs) are listed with the reason under
    ``"skipped"`` in ``agreement.json`` and as rows with only metric, unit, n and note in ``agreement.csv``.
    """
    out = Path(out_dir)
    files = {}
    skipped = skipped_metrics(results, pairs)
    doc = {
        "icc_form": "ICC(A,1): two-way random effects, absolute agreement, single measures (McGraw & Wong 1996) = ICC(2,1) (Shrout & Fleiss 1979)",
        "bland_altman": "differences automatic - manual; limits of agreement = bias +/- 1.96 SD",
        "tests": "Wilcoxon signed-rank (two-sided, scipy.stats.wilcoxon); Pearson r (scipy.stats.pearsonr)",
        "sources": sources or {},
        "metrics": {k: v.to_dict() for k, v in results.items()},
        "skipped": {k: {"n": len(pairs[k][1]), "reason": why} for k, why in skipped.items()},
    }
    files["json"] = atomic_write_text(out / "agreement.json", json.dumps(doc, indent=2))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(STATS_COLUMNS)
    for st in results.values():
        d = st.to_dict()
        d["icc_a1_ci95_low"], d["icc_a1_ci95_high"] = d.pop("icc_a1_ci95")
        w.writerow(["" if d[c] is None else (f"{d[c]:.6g}" if isinstance(d[c], float) else d[c]) for c in STATS_COLUMNS])
    for metric, why in skipped.items():
        d = {"metric": metric, "unit": UNITS.get(metric, ""), "n": len(pairs[metric][1]), "note": f"skipped: {why}"}
        w.writerow([d.get(c, "") for c in STATS_COLUMNS])
    files["csv"] = atomic_write_text(out / "agreement.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["Case", "Metric", "Side", "Auto", "Manual", "Difference"])
    for metric, (keys, a, m) in pairs.items():
        for key, x, y in zip(keys, a, m):
            w.writerow([key[0], metric, key[2], f"{x:.4g}", f"{y:.4g}", f"{x - y:.4g}"])
    files["pairs"] = atomic_write_text(out / "pairs.csv", buf.getvalue())
    for metric, st in results.items():
        _, a, m = pairs[metric]
        files[f"plot_{metric}"] = plot_agreement(st, a, m, out / f"agreement_{metric}.png")
    return files
