"""One summary table across the cases of a batch: DSCA, foramen, QC flags, model versions, timings.

:func:`case_row` reads the result files of one case folder (whatever task wrote them: ``dsca.json`` of ``dsca
segment``, ``measurements.json`` of ``foramen measure``, or both plus ``study_summary.json`` under ``dsca/`` and
``foramen/`` of a ``study``) and returns one flat row. The batch stores that row as ``batch_row.json`` inside the
case folder (written before the folder is renamed into place, so it is as complete as the folder) and
:func:`write_summary_table` writes all rows as ``batch_summary.csv`` and, when ``pyarrow`` is installed,
``batch_summary.parquet``.

Columns (empty where the task or the case does not provide the value):

- ``case``, ``status`` (ok / failed / skipped / not run), ``partial``, ``message`` (reason of a failure),
  ``case_s`` (wall time of the case on its worker), ``worker`` (Dask worker address, ``local`` in-process),
  ``worker_peak_rss_mb`` (peak resident memory of that worker process after the case);
- DSCA: ``dsca_min_mm2`` (smallest non-empty axial DSCA, QC-flagged slices included, as ``DscaTable.smallest``),
  ``dsca_min_corrected_mm2``, ``dsca_min_slice``, ``dsca_min_position_mm``, ``dsca_min_stenosis`` (its category, or
  why it was not graded); ``dsca_min_graded_mm2`` / ``_slice`` / ``_stenosis`` (smallest among the slices graded for
  stenosis, i.e. without a blocking QC flag, as ``DscaTable.smallest_graded``); ``dsca_n_slices``,
  ``dsca_n_slices_with_sac``, ``dsca_n_slices_not_graded``; per level ``dsca_<level>_mm2``,
  ``dsca_<level>_corrected_mm2``, ``dsca_<level>_stenosis`` (e.g. ``dsca_L4-5_mm2``);
- foramen: ``foramen_<side>_height_mm``, ``foramen_<side>_width_mm``, ``foramen_<side>_area_mm2``,
  ``foramen_<side>_flag`` (enlargement flag), ``foramen_<side>_qc`` (QC status of the side's values: ok / review)
  for side left / right, ``posterior_disc_height_mm``;
- ``qc_flags``: `` | ``-joined QC flags of the case (DSCA slice flags with their counts, DSCA level flags, foramen
  input QC, side flags and side QC reasons, study steps that failed or were skipped); a QC flag asks for a look, it is
  never a diagnosis;
- models: ``dsca_model``, ``dsca_model_sha256``, ``foramen_model``, ``foramen_model_sha256`` (first 12 hex digits),
  ``spinemorph_version``;
- timings: ``dsca_s``, ``dsca_model_load_s``, ``foramen_segment_s``, ``foramen_measure_s``, ``study_s``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from pathlib import Path

from spinemorph.atomic import atomic_path, atomic_write_text

#: the row of a case, stored inside its result folder
ROW_JSON = "batch_row.json"
SUMMARY_CSV = "batch_summary.csv"
SUMMARY_PARQUET = "batch_summary.parquet"

#: columns always present, in this order; per-level DSCA columns are inserted after ``dsca_n_slices_with_sac``
BASE_COLUMNS = ("case", "status", "partial", "message", "case_s", "worker", "worker_peak_rss_mb")
DSCA_COLUMNS = ("dsca_min_mm2", "dsca_min_corrected_mm2", "dsca_min_slice", "dsca_min_position_mm", "dsca_min_stenosis",
                "dsca_min_graded_mm2", "dsca_min_graded_slice", "dsca_min_graded_stenosis", "dsca_n_slices",
                "dsca_n_slices_with_sac", "dsca_n_slices_not_graded")
FORAMEN_COLUMNS = tuple(f"foramen_{side}_{m}" for side in ("left", "right")
                        for m in ("height_mm", "width_mm", "area_mm2", "flag", "qc")) + ("posterior_disc_height_mm",)
TAIL_COLUMNS = ("qc_flags", "dsca_model", "dsca_model_sha256", "foramen_model", "foramen_model_sha256",
                "spinemorph_version", "dsca_s", "dsca_model_load_s", "foramen_segment_s", "foramen_measure_s", "study_s")

#: sha256 of DSCA weights loaded in this process, by model name (filled by the batch's model cache)
LOADED_DSCA_SHA256: dict[str, str] = {}


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _first(case_dir: Path, name: str, sub: str) -> dict | None:
    for p in (case_dir / name, case_dir / sub / name):
        if p.is_file():
            return _read_json(p)
    return None


def _num(v, digits: int = 3):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def _dsca_sha(name: str) -> str:
    if name in LOADED_DSCA_SHA256:
        return LOADED_DSCA_SHA256[name][:12]
    try:
        from DuralSacSegLib.models import catalog_entries

        return str(catalog_entries().get(name, {}).get("sha256", ""))[:12]
    except Exception:  # noqa: BLE001 - a missing catalogue only leaves the column empty
        return ""


def _foramen_model(name: str) -> tuple[str, str]:
    """(catalogue name, first 12 hex digits of the SHA-256) of the 3D model ``name`` ("default" resolved)."""
    try:
        from FORAMEN3DLib import models3d

        resolved, path, expected = models3d.resolve_model(name)
        if expected:
            return resolved, str(expected)[:12]
        return resolved, models3d.sha256_file(path)[:12] if path.is_file() else ""
    except Exception:  # noqa: BLE001 - an unknown / removed model only leaves the SHA column empty
        return name, ""


def _dsca_part(doc: dict, row: dict, flags: list[str]) -> None:
    slices = [s for s in doc.get("slices", []) if isinstance(s, dict)]
    with_sac = [s for s in slices if (_num(s.get("area_mm2")) or 0) > 0]
    row["dsca_n_slices"] = len(slices)
    row["dsca_n_slices_with_sac"] = len(with_sac)
    blocking = set((doc.get("qc") or {}).get("blocking_flags") or [])
    if blocking:
        graded = [s for s in with_sac if not blocking.intersection(s.get("qc_flags") or [])]
    else:  # outputs without the blocking-flag rule: a slice with a stenosis category is graded
        graded = [s for s in with_sac if s.get("stenosis")]
    row["dsca_n_slices_not_graded"] = len(with_sac) - len(graded)
    if with_sac:
        m = min(with_sac, key=lambda s: (float(s["area_mm2"]), s.get("slice_index", 0)))
        row.update(dsca_min_mm2=_num(m.get("area_mm2")), dsca_min_corrected_mm2=_num(m.get("corrected_area_mm2")),
                   dsca_min_slice=m.get("slice_index"), dsca_min_position_mm=_num(m.get("position_mm")),
                   dsca_min_stenosis=m.get("stenosis") or m.get("stenosis_note") or "")
    if graded:
        g = min(graded, key=lambda s: (float(s["area_mm2"]), s.get("slice_index", 0)))
        row.update(dsca_min_graded_mm2=_num(g.get("area_mm2")), dsca_min_graded_slice=g.get("slice_index"),
                   dsca_min_graded_stenosis=g.get("stenosis", ""))
    if not with_sac and slices:
        flags.append("dsca: no dural sac on any slice")
    counts = Counter(f for s in slices for f in (s.get("qc_flags") or []))
    flags += [f"dsca {f} ({n} slice{'s' if n > 1 else ''})" for f, n in sorted(counts.items())]
    for lv in doc.get("levels", []) or []:
        name = str(lv.get("level", "")).strip()
        if not name:
            continue
        index = _num(lv.get("slice_index"))
        inside = index is not None and index >= 0
        row[f"dsca_{name}_mm2"] = _num(lv.get("area_mm2")) if inside else None
        row[f"dsca_{name}_corrected_mm2"] = _num(lv.get("corrected_area_mm2")) if inside else None
        row[f"dsca_{name}_stenosis"] = lv.get("stenosis", "") if inside else ""
        if not inside:
            flags.append(f"dsca {name}: outside the imaged slices")
        flags += [f"dsca {name}: {f}" for f in (lv.get("qc_flags") or [])]
    seg = doc.get("segmentation") or {}
    name = str(seg.get("model", ""))
    row["dsca_model"] = name
    row["dsca_model_sha256"] = _dsca_sha(name) if name else ""
    t = seg.get("timings_s") or {}
    row["dsca_s"] = _num(t.get("total_s"))
    row["dsca_model_load_s"] = _num(t.get("model_load_s"))


def _foramen_part(doc: dict, row: dict, flags: list[str]) -> None:
    metric_col = {"foraminal_height": "height_mm", "foraminal_width": "width_mm", "foraminal_area": "area_mm2"}
    for m in doc.get("measurements", []) or []:
        metric, side = m.get("metric"), m.get("side")
        if metric in metric_col and side in ("left", "right"):
            row[f"foramen_{side}_{metric_col[metric]}"] = _num(m.get("value"))
        elif metric == "posterior_disc_height":
            row["posterior_disc_height_mm"] = _num(m.get("value"))
    flags += [f"foramen input: {q}" for q in (doc.get("input_qc") or [])]
    for side, info in (doc.get("sides") or {}).items():
        if isinstance(info, dict):
            row[f"foramen_{side}_flag"] = info.get("flag", "")
            row[f"foramen_{side}_qc"] = info.get("qc_status", "")
            if info.get("flagged") or info.get("flag"):
                flags.append(f"foramen {side}: {info.get('flag') or 'flagged'}")
            if info.get("qc_status") not in (None, "", "ok"):
                own = [r for r in info.get("qc_reasons") or [] if r not in (doc.get("input_qc") or [])]
                flags.append(f"foramen {side} QC {info['qc_status']}" + (": " + " / ".join(own) if own else ""))
    seg = doc.get("segmentation") or {}
    name = str(seg.get("model", "")) if seg else ""
    row["foramen_model"], row["foramen_model_sha256"] = _foramen_model(name) if name else ("(label map given)", "")
    row["foramen_segment_s"] = _num((seg.get("timings_s") or {}).get("total"))
    row["foramen_measure_s"] = _num((doc.get("timings_s") or {}).get("measure"))


def case_row(case_dir: str | os.PathLike) -> dict:
    """The summary columns of one case's result folder (without ``case``/``status``: the batch adds those)."""
    from spinemorph import __version__

    case_dir = Path(case_dir)
    row: dict = {"spinemorph_version": __version__}
    flags: list[str] = []
    dsca = _first(case_dir, "dsca.json", "dsca")
    if dsca is not None:
        _dsca_part(dsca, row, flags)
    foramen = _first(case_dir, "measurements.json", "foramen")
    if foramen is not None:
        _foramen_part(foramen, row, flags)
    study = _read_json(case_dir / "study_summary.json")
    if study is not None:
        row["study_s"] = _num(study.get("total_seconds"))
        row["spinemorph_version"] = study.get("spinemorph_version", __version__)
        for step in study.get("steps", []) or []:
            if step.get("status") in ("failed", "skipped"):
                msg = str(step.get("message", "")).strip()
                flags.append(f"study {step.get('name')} {step.get('status')}" + (f": {msg}" if msg else ""))
    row["qc_flags"] = " | ".join(flags)
    return row


def read_row(case_dir: str | os.PathLike) -> dict:
    """The stored row of a finished case (``batch_row.json``), or one computed from its files."""
    stored = _read_json(Path(case_dir) / ROW_JSON)
    return stored if stored is not None else case_row(case_dir)


def columns_of(rows: list[dict]) -> list[str]:
    """Fixed columns in their order, per-level DSCA columns after the DSCA block, then anything else."""
    known = set(BASE_COLUMNS + DSCA_COLUMNS + FORAMEN_COLUMNS + TAIL_COLUMNS)
    extra = []
    for r in rows:
        for k in r:
            if k not in known and k not in extra:
                extra.append(k)
    levels = sorted(k for k in extra if k.startswith("dsca_"))
    rest = [k for k in extra if k not in levels]
    return [*BASE_COLUMNS, *DSCA_COLUMNS, *levels, *FORAMEN_COLUMNS, *TAIL_COLUMNS, *rest]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def write_summary_table(rows: list[dict], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``batch_summary.csv`` (always) and ``batch_summary.parquet`` (if pyarrow is installed), atomically."""
    out = Path(out_dir)
    cols = columns_of(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in cols])
    paths = {"csv": atomic_write_text(out / SUMMARY_CSV, buf.getvalue())}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return paths
    arrays = {}
    for c in cols:
        values = [r.get(c) for r in rows]
        present = [v for v in values if v is not None and v != ""]
        if present and all(isinstance(v, bool) for v in present):
            arrays[c] = pa.array([v if isinstance(v, bool) else None for v in values], pa.bool_())
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            arrays[c] = pa.array([float(v) if isinstance(v, (int, float)) else None for v in values], pa.float64())
        else:
            arrays[c] = pa.array([_cell(v) for v in values], pa.string())
    table = pa.table(arrays)
    with atomic_path(out / SUMMARY_PARQUET) as tmp:
        pq.write_table(table, tmp)
    paths["parquet"] = out / SUMMARY_PARQUET
    return paths
