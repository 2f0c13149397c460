"""The benchmark machinery (``spinemorph bench``): FLOP counting, timing, child-process memory, outputs.

No timing assertions: only known answers (FLOPs of a convolution, memory of a child that allocates a known
amount, call orders) and the files and tables the benchmark writes.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from spinemorph import benchutil
from spinemorph.app import bench
from spinemorph.app.cli import main
from spinemorph.errors import InputError, OutputError

torch.set_num_threads(1)


def test_count_flops_of_a_known_convolution():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    x = torch.zeros(2, 3, 16, 16)
    # every output value (2·8·16·16) is a 3·3·3 multiply-add (2 operations each)
    assert benchutil.count_flops(conv, x) == 2 * (2 * 8 * 16 * 16) * (3 * 3 * 3)


def test_count_flops_of_a_3d_convolution_and_a_linear_layer():
    conv = torch.nn.Conv3d(1, 4, kernel_size=3, padding=1)
    assert benchutil.count_flops(conv, torch.zeros(1, 1, 8, 8, 8)) == 2 * (4 * 8**3) * 27
    lin = torch.nn.Linear(10, 5)
    assert benchutil.count_flops(lin, torch.zeros(3, 10)) == 2 * 3 * 10 * 5


def test_count_flops_of_a_network_equals_the_sum_of_its_convolutions():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    x = torch.zeros(1, 1, 32, 32)
    assert benchutil.count_flops(net, x) == 2 * 32 * 32 * (4 * 9 + 2 * 4)


def test_peak_rss_is_positive():
    assert benchutil.peak_rss_mb() > 10.0  # a Python process with torch imported


def test_run_child_reports_the_childs_own_peak_memory():
    big = benchutil.run_child([sys.executable, "-c", "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"])
    assert big["returncode"] == 0 and not big["timed_out"]
    assert big["peak_rss_mb"] >= 300
    small = benchutil.run_child([sys.executable, "-c", "pass"])
    # a later, small child is measured on its own (not the maximum over all children so far)
    assert 0 < small["peak_rss_mb"] < 200
    assert small["wall_s"] > 0


def test_run_child_exit_code_stderr_and_timeout():
    r = benchutil.run_child([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    assert r["returncode"] == 3 and r["stderr_tail"].endswith("boom")
    r = benchutil.run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert r["timed_out"] and r["wall_s"] < 20


def test_time_interleaved_runs_variants_round_robin():
    calls = []
    res = benchutil.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert set(res) == {"a", "b"}
    for r in res.values():
        assert r["repeats"] == 3 and 0 <= r["min_s"] <= r["median_s"] <= r["max_s"]


def test_time_median_s_counts_calls():
    n = []
    r = benchutil.time_median_s(lambda: n.append(1), repeats=4, warmup=2)
    assert len(n) == 6 and r["repeats"] == 4


def test_matmul_peak_is_a_positive_rate():
    assert benchutil.matmul_peak_gflops(128, repeats=2) > 0


def test_machine_info_is_json_ready():
    info = benchutil.machine_info()
    json.dumps(info)
    assert info["logical_cpus"] >= 1 and info["torch"] == torch.__version__
    assert len(info["loadavg_1_5_15"]) == 3


def test_dice():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert bench.dice(a, b) == 1.0
    a[:2] = True
    b[1:3] = True
    assert bench.dice(a, b) == pytest.approx(2 * 4 / 16)


def test_bench_2d_small_slices_reports_flops_rates_and_agreement():
    slices = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)
    res = bench.bench_2d("unet", slices, peak_gflops=10.0, repeats=1, batch=2, onnx=False, log_fn=lambda s: None)
    assert res["architecture"] == "unet" and res["gflop_per_slice"] > 0
    ref = res["variants"][0]
    assert ref["variant"] == "torch fp32 (reference)"
    assert ref["max_abs_logit_diff"] == 0.0 and ref["mask_agreement"] == 1.0
    for v in res["variants"]:
        assert v["ms_per_slice"] > 0
        assert v["gflops_achieved"] == pytest.approx(res["gflop_per_slice"] / (v["ms_per_slice"] / 1e3))
        assert v["ratio_to_fp32_peak"] == pytest.approx(v["gflops_achieved"] / res["fp32_peak_gflops_used"])
    # the peak is the larger of the given one and a matmul timed in the same rounds
    assert res["fp32_peak_gflops_used"] == pytest.approx(max(10.0, res["fp32_matmul_gflops_in_rounds"]))
    fused = [v for v in res["variants"] if v["variant"].startswith("torch fp32 fuse_bn")]
    assert fused and fused[0]["mask_agreement"] > 0.999


def test_run_bench_peak_section_writes_json_and_markdown(tmp_path):
    doc = bench.run_bench(tmp_path, repeats=1, quick=True, threads=1, sections=("peak",), log_fn=lambda s: None)
    data = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert data["matmul_peak"]["fp32_gflops"] > 0
    assert data["machine"]["torch_threads"] == 1
    assert len(data["load_start"]) == 3 and len(data["load_end"]) == 3
    assert data == json.loads(json.dumps(doc))
    md = (tmp_path / bench.MD_NAME).read_text()
    assert md.startswith("# SpineMorph benchmark") and "Matrix-multiply peak" in md and "Load average" in md
    with pytest.raises(OutputError):
        bench.run_bench(tmp_path, repeats=1, quick=True, sections=("peak",), log_fn=lambda s: None)
    bench.run_bench(tmp_path, repeats=1, quick=True, sections=("peak",), overwrite=True, log_fn=lambda s: None)


def test_run_bench_rejects_bad_settings(tmp_path):
    with pytest.raises(InputError):
        bench.run_bench(tmp_path, repeats=0)
    with pytest.raises(InputError):
        bench.run_bench(tmp_path, sections=("nonsense",))


def _fake_doc() -> dict:
    machine = benchutil.machine_info()
    return {
        "version": "0", "quick": False, "repeats": 3, "machine": machine, "load_start": [1.0, 2.0, 3.0],
        "load_end": [1.0, 1.0, 1.0],
        "matmul_peak": {"n": 2048, "fp32_gflops": 100.0},
        "models_2d": [{"architecture": "unet", "weights": "random-init", "parameters": 1000, "gflop_per_slice": 40.0,
                       "batch": 4, "onnx": None,
                       "variants": [{"variant": "torch fp32 (reference)", "ms_per_slice": 1000.0, "min_ms_per_slice": 900.0,
                                     "gflops_achieved": 40.0, "ratio_to_fp32_peak": 0.4, "max_abs_logit_diff": 0.0,
                                     "mask_agreement": 1.0},
                                    {"variant": "torch fp32 fuse_bn + channels_last", "ms_per_slice": 500.0,
                                     "min_ms_per_slice": 450.0, "gflops_achieved": 80.0, "ratio_to_fp32_peak": 0.8,
                                     "max_abs_logit_diff": 1e-6, "mask_agreement": 1.0}]}],
        "foramen_measure": {"levels": 1, "measure_s": 0.4, "meshes_s": 0.3, "per_level_s": 0.7, "input_size_ijk": [1, 2, 3]},
        "commands": [{"command": "dsca segment", "runs": 1, "median_wall_s": 5.0, "min_wall_s": 5.0, "peak_rss_mb": 5000.0,
                      "returncodes": [0], "error": None}],
    }


def test_targets_and_markdown_from_known_figures():
    doc = _fake_doc()
    targets = {t["target"]: t for t in bench.evaluate_targets(doc)}
    flop = next(t for k, t in targets.items() if "FLOP rate" in k)
    assert flop["met"] and flop["measured"].startswith("0.80")
    fm = next(t for k, t in targets.items() if "foramen measurement" in k)
    assert fm["met"]
    mem = next(t for k, t in targets.items() if "memory" in k)
    assert not mem["met"] and "5000 MB" in mem["measured"]
    doc["targets"] = bench.evaluate_targets(doc)
    md = bench.to_markdown(doc)
    assert "| unet | random-init |" in md and "0.80" in md and "| dsca segment | 1 | 5.00 |" in md


def test_cli_bench_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--out", "x", "--repeats", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    assert "benchmark.json" in capsys.readouterr().out


def test_3d_flops_counted_on_a_half_size_input_are_exact():
    from FORAMEN3DLib.network3d import UNet3D

    net = UNet3D(base_channels=2, depth=2, stem_stride=2).eval()
    x = torch.zeros(1, 1, 32, 32, 64)
    direct = benchutil.count_flops(net, x)
    assert bench.count_flops_3d(net, x, max_voxels=1000) == direct
    assert bench.count_flops_3d(net, x) == direct


def test_cli_bench_runs_a_section_and_rejects_unknown_ones(tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path), "--only", "peak", "--quick", "--repeats", "1", "--threads", "1"]) == 0
    assert (tmp_path / bench.JSON_NAME).is_file() and (tmp_path / bench.MD_NAME).is_file()
    assert main(["bench", "--out", str(tmp_path / "x"), "--only", "peak,warp"]) == 1
    assert "unknown benchmark section" in capsys.readouterr().err


def test_matmul_backends_compute_the_product():
    assert benchutil.matmul_peak_gflops(64, repeats=2, backend="numpy") > 0
    pytest.importorskip("onnxruntime")
    from spinemorph.onnx_export import matmul_session

    a = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    np.testing.assert_allclose(matmul_session(32, threads=1)(a), a @ a, rtol=1e-5)
    assert benchutil.matmul_peak_gflops(64, repeats=2, backend="onnxruntime") > 0


def test_dsca_target_is_judged_on_the_default_path():
    """The 20-slice DSCA target uses the variant `dsca segment` runs (marked default), not the fastest one."""
    doc = {"dsca_end_to_end": {"variants": [
        {"variant": "torch fp32 (reference), whole slices, batch 8", "median_s": 9.0},
        {"variant": "onnxruntime fp32, 128-px canal window, batch 1", "median_s": 0.9},
        {"variant": "torch fp32 fuse_bn + channels_last, 128-px canal window, batch 1 (default)", "median_s": 1.5,
         "default": True}]}}
    (row,) = bench.evaluate_targets(doc)
    assert row["met"] and row["measured"].startswith("1.50 s") and "(default)" in row["measured"]
    doc["dsca_end_to_end"]["variants"][2]["median_s"] = 2.5
    (row,) = bench.evaluate_targets(doc)
    assert not row["met"]
