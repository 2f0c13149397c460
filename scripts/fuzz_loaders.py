"""Fuzz the image / DICOM / segmentation / weights loaders: every input must load or raise SpineMorphError.

A seed corpus of small valid files is generated on the fly (``--save-seeds DIR`` keeps a copy): NRRD (raw and gzip,
attached and detached ``.nhdr``), NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``), a Slicer ``.seg.nrrd``, a
3-file DICOM series, and weights files of both tasks (FORAMEN3D 3D U-Net, DuralSacSeg format). Each fuzz input is
one seed mutated by a few random operators (bit flips, interesting bytes, chunk insert / delete / duplicate,
truncation, splicing with another seed, and for text headers: numbers replaced by 0 / -1 / NaN / inf / huge, lines
dropped or duplicated) and handed to the loader of its kind:

- images: :func:`spinemorph.volume.read_volume` (file or DICOM folder);
- segmentations: :func:`spinemorph.segio.read_seg_nrrd`;
- weights: :func:`FORAMEN3DLib.models3d.load_model` and :func:`DuralSacSegLib.models.load_model`.

Outcomes: ``ok`` (loaded), ``clean`` (:class:`~spinemorph.errors.SpineMorphError`), ``unhandled`` (any other
exception: a bug) and ``crash`` (the process died: segfault / abort / out of memory inside a C++ reader). Inputs run
in a worker process that a supervisor restarts after a crash, so one crash does not end the run. The run prints the
counts per loader and exits 1 if any input was unhandled or crashed (inputs saved under ``--crash-dir``). Input
number i depends only on ``--seed`` and i (reproducible one by one).

usage:
  python scripts/fuzz_loaders.py                 # long run: 10 000 inputs
  python scripts/fuzz_loaders.py --quick         # CI: 200 inputs
  python scripts/fuzz_loaders.py --n 50000 --seed 7 --crash-dir crashes/ --save-seeds seeds/
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

QUICK_N = 200
LONG_N = 10_000

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x0A, 0x3D)
INTERESTING_NUMBERS = ("0", "-1", "nan", "inf", "-inf", "1e308", "4294967297", "99999999", "0.000001", "", "x", "3 3")
NUMBER_RE = re.compile(rb"-?\d+(\.\d+)?(e[-+]?\d+)?")


@dataclasses.dataclass
class Seed:
    """One valid input: its files (relative name -> bytes), the loader kind, and whether it is a folder input."""

    name: str
    kind: str  # "image", "dicom", "seg", "weights3d", "weights2d"
    files: dict[str, bytes]
    main: str  # the file (or "." for the folder) handed to the loader
    text_header: bool = False
    loads: bool = True  # False: the unmutated seed already ends in a clean SpineMorphError (see make_seeds)


# ---------------------------------------------------------------------- seed corpus
def make_seeds(tmp: Path) -> list[Seed]:
    """Small valid files of every supported kind, generated now (nothing committed)."""
    import SimpleITK as sitk

    from spinemorph.dicomio import write_dicom_series
    from spinemorph.segio import write_seg_nrrd
    from spinemorph.volume import Volume

    rng = np.random.default_rng(0)
    arr = (100 + 50 * rng.standard_normal((4, 8, 8))).astype(np.int16)
    rot = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # a sagittal-like orientation
    vol = Volume(arr, (0.7, 0.8, 3.0), (-10.0, 5.0, 30.0), rot)
    seeds: list[Seed] = []

    def image_seed(name: str, text_header: bool = False, compress: bool = False, volume=vol) -> None:
        p = tmp / name
        sitk.WriteImage(volume.to_sitk(), str(p), compress)
        files = {name: p.read_bytes()}
        if name.endswith(".nhdr"):
            for extra in tmp.glob(Path(name).stem + ".*raw*"):
                files[extra.name] = extra.read_bytes()
        seeds.append(Seed(name, "image", files, name, text_header))

    image_seed("raw.nrrd", text_header=True)
    image_seed("gz.nrrd", text_header=True, compress=True)
    image_seed("detached.nhdr", text_header=True)
    image_seed("plain.nii")
    image_seed("zipped.nii.gz", compress=True)
    image_seed("meta.mha", text_header=True)
    image_seed("float.mha", text_header=True, volume=vol.with_array(arr.astype(np.float32) / 3))

    labels = vol.with_array((arr > 100).astype(np.uint8) + (arr > 150).astype(np.uint8))
    seg = tmp / "labels.seg.nrrd"
    write_seg_nrrd(labels, {1: ("L4", (1.0, 0.0, 0.0)), 2: ("disc", (0.0, 1.0, 0.0))}, seg)
    seeds.append(Seed("labels.seg.nrrd", "seg", {"labels.seg.nrrd": seg.read_bytes()}, "labels.seg.nrrd", True))

    dcm = tmp / "dicom"
    files = write_dicom_series(Volume(arr[:3], (0.7, 0.7, 4.0)), dcm)
    seeds.append(Seed("dicom", "dicom", {f.name: f.read_bytes() for f in files}, "."))

    import torch
    from DuralSacSegLib.models import FORMAT_VERSION, INPUT_SIZE, NORMALIZATION
    from FORAMEN3DLib.models3d import save_weights
    from FORAMEN3DLib.network3d import UNet3D

    torch.manual_seed(0)
    w3 = tmp / "foramen.pt"
    save_weights(UNet3D(base_channels=2, depth=1, max_channels=4), w3)
    seeds.append(Seed("foramen.pt", "weights3d", {"foramen.pt": w3.read_bytes()}, "foramen.pt"))
    # a DuralSacSeg-format file with small tensors: parsing and validation run fully, the load ends at the architecture
    # check ("does not fit"); a real 2D network (16 MB, ~0.5 s to build) would make 10 000 inputs take hours
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "architecture": "unet", "config": {"seed": 0},
                "state_dict": {"w": torch.zeros(3, 3, dtype=torch.float16)}, "input_size": list(INPUT_SIZE),
                "normalization": NORMALIZATION, "threshold": 0.5}, buf)
    seeds.append(Seed("dsca.pt", "weights2d", {"dsca.pt": buf.getvalue()}, "dsca.pt", loads=False))
    return seeds


# ---------------------------------------------------------------------- mutators
def _bitflip(rng, b: bytearray) -> None:
    for _ in range(int(rng.integers(1, 9))):
        if b:
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))


def _interesting(rng, b: bytearray) -> None:
    for _ in range(int(rng.integers(1, 5))):
        if b:
            b[int(rng.integers(len(b)))] = INTERESTING_BYTES[int(rng.integers(len(INTERESTING_BYTES)))]


def _insert(rng, b: bytearray) -> None:
    i = int(rng.integers(len(b) + 1))
    b[i:i] = rng.bytes(int(rng.integers(1, 64)))


def _delete(rng, b: bytearray) -> None:
    if len(b) > 2:
        i = int(rng.integers(len(b) - 1))
        del b[i : i + int(rng.integers(1, min(256, len(b) - i) + 1))]


def _duplicate(rng, b: bytearray) -> None:
    if b:
        i = int(rng.integers(len(b)))
        chunk = b[i : i + int(rng.integers(1, 128))]
        j = int(rng.integers(len(b) + 1))
        b[j:j] = chunk


def _truncate(rng, b: bytearray) -> None:
    del b[int(rng.integers(len(b) + 1)) :]


def _header_split(b: bytearray) -> int:
    """End of a text header (NRRD blank line, MetaImage ElementDataFile line); the whole buffer if none."""
    for marker in (b"\n\n", b"ElementDataFile = LOCAL\n"):
        k = b.find(marker)
        if k >= 0:
            return k + len(marker)
    return min(len(b), 2048)


def _header_number(rng, b: bytearray) -> None:
    end = _header_split(b)
    nums = list(NUMBER_RE.finditer(bytes(b[:end])))
    if nums:
        m = nums[int(rng.integers(len(nums)))]
        new = INTERESTING_NUMBERS[int(rng.integers(len(INTERESTING_NUMBERS)))].encode()
        b[m.start() : m.end()] = new


def _header_line(rng, b: bytearray) -> None:
    end = _header_split(b)
    lines = bytes(b[:end]).split(b"\n")
    if len(lines) > 2:
        i = int(rng.integers(1, len(lines) - 1))
        if rng.random() < 0.5:
            del lines[i]
        else:
            lines.insert(i, lines[i])
        b[:end] = b"\n".join(lines)


BINARY_MUTATORS = (_bitflip, _interesting, _insert, _delete, _duplicate, _truncate)
HEADER_MUTATORS = (_header_number, _header_number, _header_line)


def mutate(rng: np.random.Generator, seed: Seed, seeds: list[Seed]) -> tuple[dict[str, bytes], list[str]]:
    """Mutated copy of ``seed``'s files and the names of the operators applied."""
    files = dict(seed.files)
    ops = []
    targets = list(files)
    if seed.kind == "dicom":
        r = rng.random()
        if r < 0.1 and len(targets) > 1:  # a missing slice
            del files[targets[int(rng.integers(len(targets)))]]
            return files, ["drop_file"]
        if r < 0.2:  # every file mutated the same way
            ops.append("all_files")
    name = seed.main if seed.main in files else targets[int(rng.integers(len(targets)))]
    if seed.kind == "dicom" and "all_files" not in ops:
        name = targets[int(rng.integers(len(targets)))]
    chosen = targets if "all_files" in ops else [name]
    for fname in chosen:
        b = bytearray(files[fname])
        for _ in range(int(rng.integers(1, 4))):
            pool = BINARY_MUTATORS + (HEADER_MUTATORS if seed.text_header else ())
            if rng.random() < 0.05:
                other = seeds[int(rng.integers(len(seeds)))]
                ob = next(iter(other.files.values()))
                cut = int(rng.integers(len(b) + 1))
                b = bytearray(b[:cut] + ob[int(rng.integers(len(ob) + 1)) :])
                ops.append("splice")
                continue
            op = pool[int(rng.integers(len(pool)))]
            op(rng, b)
            ops.append(op.__name__.strip("_"))
        files[fname] = bytes(b)
    return files, ops


# ---------------------------------------------------------------------- loaders
def load(kind: str, path: Path) -> object:
    """Hand ``path`` to the loader of ``kind`` (raises whatever the loader raises)."""
    if kind in ("image", "dicom"):
        from spinemorph.volume import read_volume

        return read_volume(path)
    if kind == "seg":
        from spinemorph.segio import read_seg_nrrd

        return read_seg_nrrd(path)
    if kind == "weights3d":
        from FORAMEN3DLib.models3d import load_model

        return load_model(path, device="cpu")
    if kind == "weights2d":
        from DuralSacSegLib.models import load_model

        return load_model(path, device="cpu")
    raise ValueError(kind)


# also feed every weights file to the other task's loader (wrong kind of file): both must refuse it cleanly
CROSS = {"weights3d": "weights2d", "weights2d": "weights3d", "image": "seg", "seg": "image"}


def make_input(seed: int, index: int, seeds: list[Seed]) -> tuple[Seed, dict[str, bytes], list[str], str]:
    """Input number ``index`` of the run with ``seed`` (independent of the others: a crashed run resumes exactly)."""
    rng = np.random.default_rng([seed, index])
    s = seeds[int(rng.integers(len(seeds)))]
    files, ops = mutate(rng, s, seeds)
    kind = CROSS[s.kind] if s.kind in CROSS and rng.random() < 0.1 else s.kind
    return s, files, ops, kind


def _write_input(folder: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for fname, data in files.items():
        (folder / fname).write_bytes(data)


def worker(n: int, seed: int, start: int, journal: Path, examples: Path, check_seeds: bool, crash_at: int = -1,
           indices: list[int] | None = None) -> None:
    """Run inputs ``start`` .. ``n - 1``, appending ``index, outcome, loader, seconds`` lines to ``journal`` (a
    ``begin`` line before each input, so that a crash of the process names its input)."""
    import SimpleITK as sitk
    import torch

    from spinemorph.errors import SpineMorphError

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    with tempfile.TemporaryDirectory(prefix="spinemorph_fuzz_") as tmpname, open(journal, "a") as jf, \
            open(examples, "a") as xf:
        tmp = Path(tmpname)
        (tmp / "seeds").mkdir()
        seeds = make_seeds(tmp / "seeds")
        if check_seeds:  # the unmutated seeds load (or, for ``loads=False``, fail cleanly)
            for s in seeds:
                _write_input(tmp / "work", s.files)
                try:
                    load(s.kind, tmp / "work" / s.main if s.main != "." else tmp / "work")
                except SpineMorphError:
                    if s.loads:
                        raise
        for i in (range(start, n) if indices is None else [k for k in indices if k >= start]):
            s, files, ops, kind = make_input(seed, i, seeds)
            loader = f"{kind}:{s.name}"
            jf.write(f"{i}\tbegin\t{loader}\t0\n")
            jf.flush()
            _write_input(tmp / "work", files)
            target = tmp / "work" if s.main == "." else tmp / "work" / s.main
            t0 = time.perf_counter()
            if i == crash_at:  # self-test of the supervisor: die like a segfaulting reader would
                os.abort()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    load(kind, target)
                outcome = "ok"
            except SpineMorphError:
                outcome = "clean"
            except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
                outcome = "unhandled"
                xf.write(json.dumps({"input": i, "seed": s.name, "loader": kind, "ops": ops,
                                     "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                                     "traceback": traceback.format_exc(limit=8)}) + "\n")
                xf.flush()
            jf.write(f"{i}\t{outcome}\t{loader}\t{time.perf_counter() - t0:.4f}\n")
            jf.flush()


def _read_journal(journal: Path) -> dict[int, tuple[str, str, float]]:
    done: dict[int, tuple[str, str, float]] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 4:
                done[int(parts[0])] = (parts[1], parts[2], float(parts[3]))
    return done


def run(n: int, seed: int, crash_dir: Path | None = None, save_seeds: Path | None = None, progress: bool = False,
        max_report: int = 20, crash_at: int = -1, indices: list[int] | None = None) -> dict:
    """Fuzz ``n`` inputs in a worker process (restarted after a crash of the process, which counts as ``crash``).

    Returns the summary dict: ``inputs``, ``ok``, ``clean``, ``unhandled`` (Python exceptions other than
    SpineMorphError), ``crashes`` (the process died: segfault, abort, out of memory), per loader, seconds.
    """
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spinemorph_fuzzrun_") as tmpname:
        tmp = Path(tmpname)
        journal, examples = tmp / "journal.tsv", tmp / "examples.jsonl"
        seeds = None
        if save_seeds is not None or crash_dir is not None:
            (tmp / "seeds").mkdir()
            seeds = make_seeds(tmp / "seeds")
        if save_seeds is not None:
            for s in seeds:
                _write_input(save_seeds / s.name, s.files)
        start, restarts = 0, 0
        while start < n:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--n", str(n), "--seed", str(seed),
                   "--start", str(start), "--journal", str(journal), "--examples", str(examples)]
            if start == 0:
                cmd.append("--check-seeds")
            if crash_at >= start:
                cmd += ["--crash-at", str(crash_at)]
            if indices is not None:
                cmd += ["--indices", ",".join(map(str, indices))]
            with open(tmp / "worker_stderr.txt", "ab") as err:
                proc = subprocess.Popen(cmd, stderr=err)
            while proc.poll() is None:
                time.sleep(2.0)
                if progress:
                    rec = _read_journal(journal)
                    counts = collections.Counter(o for o, _, _ in rec.values() if o != "begin")
                    print(f"{sum(counts.values())}/{n}: {dict(counts)} ({time.perf_counter() - t_start:.0f} s)",
                          file=sys.stderr, flush=True)
                    time.sleep(28.0)
            rec = _read_journal(journal)
            if proc.returncode == 0:
                break
            pending = sorted(i for i, (o, _, _) in rec.items() if o == "begin")
            if not pending:
                tail = (tmp / "worker_stderr.txt").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"fuzz worker failed outside the inputs (exit code {proc.returncode}):\n{tail}")
            i = pending[0]
            with open(journal, "a") as jf:
                jf.write(f"{i}\tcrash\t{rec[i][1]}\t0\n")
            with open(examples, "a") as xf:
                xf.write(json.dumps({"input": i, "seed": rec[i][1].split(":", 1)[1], "loader": rec[i][1].split(":")[0],
                                     "ops": [], "error": f"process died (exit code {proc.returncode})",
                                     "traceback": ""}) + "\n")
            if crash_dir is not None:
                s, files, _, _ = make_input(seed, i, seeds)
                _write_input(crash_dir / f"crash_{i:06d}_{s.name}", files)
            start, restarts = i + 1, restarts + 1
        rec = _read_journal(journal)
        ex = [json.loads(line) for line in examples.read_text().splitlines()] if examples.exists() else []
    if crash_dir is not None and seeds is not None:
        for e in ex:
            if e["error"].startswith("process died"):
                continue
            s, files, _, _ = make_input(seed, e["input"], seeds)
            _write_input(crash_dir / f"unhandled_{e['input']:06d}_{s.name}", {**files, "error.txt": e["traceback"].encode()})
    counts = collections.Counter(o for o, _, _ in rec.values())
    per_loader: dict = collections.defaultdict(collections.Counter)
    for o, loader, sec in rec.values():
        per_loader[loader][o] += 1
        per_loader[loader]["seconds"] += sec
    return {
        "inputs": sum(counts[k] for k in ("ok", "clean", "unhandled", "crash")),
        "seed": seed,
        "ok": counts["ok"],
        "clean": counts["clean"],
        "unhandled": counts["unhandled"],
        "crashes": counts["crash"],
        "worker_restarts": restarts,
        "seconds": round(time.perf_counter() - t_start, 1),
        "per_loader": {k: {**{o: c for o, c in v.items() if o != "seconds"}, "seconds": round(v["seconds"], 2)}
                       for k, v in sorted(per_loader.items())},
        "unhandled_examples": ex[:max_report],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fuzz the DICOM / NRRD / NIfTI / MHA / seg.nrrd / weights loaders.")
    p.add_argument("--quick", action="store_true", help=f"short CI run ({QUICK_N} inputs)")
    p.add_argument("--n", type=int, default=None, help=f"number of inputs (default {LONG_N}; --quick {QUICK_N})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--crash-dir", type=Path, default=None, help="save every unhandled / crashing input here")
    p.add_argument("--save-seeds", type=Path, default=None, help="write the seed corpus here")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--journal", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--examples", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--check-seeds", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--crash-at", type=int, default=-1, help=argparse.SUPPRESS)  # supervisor self-test
    p.add_argument("--indices", default=None, metavar="I,J,...",
                   help="run only these input numbers (e.g. the unhandled ones of an earlier run, after a fix)")
    a = p.parse_args(argv)
    n = a.n if a.n is not None else (QUICK_N if a.quick else LONG_N)
    if n < 1:
        p.error("--n must be >= 1")
    try:
        indices = sorted({int(v) for v in a.indices.split(",") if v.strip()}) if a.indices else None
    except ValueError:
        p.error("--indices must be comma-separated integers")
    if indices is not None:
        n = max(indices) + 1
    if a.worker:
        worker(n, a.seed, a.start, a.journal, a.examples, a.check_seeds, a.crash_at, indices)
        return 0
    summary = run(n, a.seed, a.crash_dir, a.save_seeds, progress=not a.quick, crash_at=a.crash_at, indices=indices)
    print(json.dumps({k: v for k, v in summary.items() if k != "unhandled_examples"}, indent=2))
    for ex in summary["unhandled_examples"]:
        print(f"\nUNHANDLED input {ex['input']} ({ex['seed']} -> {ex['loader']}, {ex['ops']}): {ex['error']}\n{ex['traceback']}")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            a.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{summary['inputs']} inputs: {summary['ok']} loaded, {summary['clean']} clean errors, "
          f"{summary['unhandled']} unhandled exceptions, {summary['crashes']} process crashes; {summary['seconds']} s")
    return 1 if summary["unhandled"] or summary["crashes"] else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
