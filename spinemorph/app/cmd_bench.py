"""``spinemorph bench``: performance benchmark (see :mod:`spinemorph.app.bench`)."""

from __future__ import annotations

import argparse

from spinemorph.argtypes import positive_int

_EPILOG = """\
measures, in one run, on a generated phantom study (seed 0): the fp32 matmul peak (GFLOP/s); every 2D network's
FLOPs per 320x320 slice, latency per slice (torch reference, BatchNorm folded + channels-last, bf16 autocast where
the CPU has native bf16, ONNX Runtime) and the ratio of the achieved FLOP rate to the peak; the 3D network's
FLOPs and latency (and lighter / heavier layouts); DSCA of a 20-slice axial series and 3D segmentation of one SPACE
volume end to end; foramen measurement + meshes from a label map; and the commands `dsca segment`,
`foramen measure` and `study` in child processes with their wall time and peak resident memory.
Embedded weights are used when installed, otherwise random weights of the same architecture.

outputs in DIR:
  benchmark.json   every figure, the machine, torch/onnxruntime versions and the load average
  benchmark.md     the same as Markdown tables (quoted by the README)

The full run takes several minutes on 2 CPU cores; --quick takes about two.

examples:
  spinemorph bench --out results/bench
  spinemorph bench --out results/bench --quick --threads 2 --overwrite
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure speed and memory (matmul peak, network FLOPs/latency, commands end to end)",
        description="Performance benchmark: FLOP rates, latencies, end-to-end times and peak memory on this machine.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for benchmark.json and benchmark.md")
    p.add_argument("--repeats", type=positive_int, default=3, metavar="N", help="timed repetitions per figure (default 3; medians)")
    p.add_argument("--quick", action="store_true",
                   help="shorter run: default 2D model only, no ONNX, no full-resolution 3D layout, study once")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch threads here and OMP_NUM_THREADS of the timed commands (default: one per core)")
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help="comma-separated subset of: peak, models_2d, batch_threads, network_3d, dsca_e2e, "
                   "foramen_3d_e2e, foramen_measure, commands (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from spinemorph.app.bench import JSON_NAME, MD_NAME, run_bench

    sections = tuple(x.strip() for x in args.only.split(",") if x.strip()) if args.only else None
    doc = run_bench(args.out, repeats=args.repeats, quick=args.quick, threads=args.threads, overwrite=args.overwrite,
                    sections=sections)
    for t in doc.get("targets", []):
        print(f"{'met ' if t['met'] else 'MISS'}  {t['target']}: {t['measured']} (goal {t['goal']})")
    print(f"wrote {args.out}/{JSON_NAME} and {args.out}/{MD_NAME} in {doc.get('bench_seconds', 0):.0f} s")
    return 0
