"""Parity with the official implementation's goldens (the acceptance test of the model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tttlrm_ns.model.parity import CHAOTIC_FRO, COARSE, TIGHT, GoldenConfigError, check_golden, config_from_golden

REPO = Path(__file__).resolve().parents[1]
LOCAL = sorted((REPO / "tests/assets/reference").glob("*.safetensors"))
SHARED = sorted((REPO.parent / "shared/reference").glob("*.safetensors"))
GOLDENS = LOCAL + [p for p in SHARED if p.name not in {q.name for q in LOCAL}]


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The ``tttlrm-parity`` command, run as a module of this checkout (not of whichever copy is installed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tttlrm_ns.model.parity", *args], capture_output=True, text=True,
                          env=env)


def test_goldens_found():
    assert len(LOCAL) >= 4


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_golden_parity(path):
    rows, _ = check_golden(path, threads=2)
    bad = [r for r in rows if not r.ok]
    assert not bad, f"diverging: {[(r.name, r.rel_normwise) for r in bad]}"
    kinds = {r.name: (r.kind, r.threshold) for r in rows}
    # every compared tensor gates, with the module's limits
    assert {k for k, _ in kinds.values()} == {"tight", "coarse", "chaotic"}
    tight = [r for r in rows if r.kind == "tight"]
    # variant outputs + blocks + dedup outputs + tokens/model inputs are all held to 1e-5
    assert len(tight) >= 16 and all(r.rel_normwise <= 1e-5 for r in tight)
    assert any(r.name.endswith("[dedup]") for r in tight)
    assert kinds["output.xyz"] == ("coarse", COARSE) and kinds["intermediate.block1"] == ("coarse", COARSE)
    assert kinds["intermediate.block1.ttt_w1"] == ("chaotic", CHAOTIC_FRO)
    assert kinds["intermediate.tokens"] == ("tight", TIGHT)


def _copy_golden(tmp_path, src, mutate):
    tensors = load_file(str(src))
    meta = json.loads(src.with_suffix(".json").read_text())
    mutate(tensors, meta)
    dst = tmp_path / src.name
    save_file(tensors, str(dst))
    dst.with_suffix(".json").write_text(json.dumps(meta))
    return dst


def test_cli_passes_and_fails(tmp_path):
    golden = REPO / "tests/assets/reference/full_d64_l2.safetensors"
    ok = _cli(str(golden))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "variant_nsfp32.output.xyz" in ok.stdout

    def perturb(t, meta):  # a 1e-4 relative error in one block is a real bug and must be caught
        x = t["variant_nsfp32.intermediate.block1"]
        t["variant_nsfp32.intermediate.block1"] = x + 1e-4 * x.abs().max() * torch.randn_like(x).sign()

    bad = _copy_golden(tmp_path, golden, perturb)
    res = _cli(str(bad))
    assert res.returncode == 1
    assert "first diverging tensor: variant_nsfp32.intermediate.block1" in res.stdout


def test_unknown_key_fails(tmp_path):
    golden = REPO / "tests/assets/reference/full_d64_l2.safetensors"

    def add(t, meta):
        t["output.depth_map"] = torch.zeros(3)

    bad = _copy_golden(tmp_path, golden, add)
    with pytest.raises(GoldenConfigError, match="output.depth_map"):
        check_golden(bad)
    res = _cli(str(bad))
    assert res.returncode == 2 and "output.depth_map" in res.stderr


def test_wrong_weights_detected(tmp_path):
    """A model whose TTT learning-rate channels were swapped (a classic porting bug) must fail."""
    golden = REPO / "tests/assets/reference/full_d64_l2.safetensors"

    def swap(t, meta):
        for i in range(2):
            k = f"model.blocks.{i}.module_list.1.f.lr_fc.weight"
            t[k] = t[k][[1, 0, 2]].contiguous()
            k = f"model.blocks.{i}.module_list.1.f.lr_fc.bias"
            t[k] = t[k][[1, 0, 2]].contiguous()

    rows, _ = check_golden(_copy_golden(tmp_path, golden, swap))
    assert not all(r.ok for r in rows)


def test_config_from_golden_generic():
    meta = json.loads((REPO / "tests/assets/reference/ar_elastic_d64_l2.json").read_text())
    cfg = config_from_golden(meta)
    assert cfg.scan == "ar" and cfg.ar_chunk_views == 1 and cfg.elastic_lambda == 0.05
    meta["config"]["prune_ratio"] = 0.4
    with pytest.raises(GoldenConfigError, match="pruning"):
        config_from_golden(meta)


FULL = REPO / "tests/assets/reference/full_d64_l2.safetensors"


def _failing(rows):
    return {r.name for r in rows if not r.ok}


def test_official_residual_stream_gates(tmp_path):
    """The official path's per-block stream is held to the coarse limit (it used to be reported only)."""

    def scale(t, meta):
        t["intermediate.block1"] = t["intermediate.block1"] * 1.3  # 30 % off: above 0.15, a real divergence

    rows, _ = check_golden(_copy_golden(tmp_path, FULL, scale))
    assert _failing(rows) == {"intermediate.block1"}


def test_official_fast_weights_gate_shape_and_values(tmp_path):
    def wrong(t, meta):
        t["intermediate.block1.ttt_w1"] = t["intermediate.block1.ttt_w1"].transpose(1, 2).contiguous()  # shape
        t["intermediate.block0.ttt_w0"] = -t["intermediate.block0.ttt_w0"]  # sign-flipped: Frobenius error 2
        t["intermediate.block0.ttt_w2"] = t["intermediate.block0.ttt_w2"].clone().fill_(float("inf"))

    rows, _ = check_golden(_copy_golden(tmp_path, FULL, wrong))
    assert _failing(rows) == {"intermediate.block1.ttt_w1", "intermediate.block0.ttt_w0", "intermediate.block0.ttt_w2"}


def test_non_finite_output_fails(tmp_path):
    def nan(t, meta):
        x = t["variant_nsfp32.output.opacity"].clone()
        x[0, 0] = float("nan")
        t["variant_nsfp32.output.opacity"] = x

    rows, _ = check_golden(_copy_golden(tmp_path, FULL, nan))
    assert _failing(rows) == {"variant_nsfp32.output.opacity", "variant_nsfp32.output.opacity [dedup]"}


def test_golden_json_cannot_set_thresholds(tmp_path):
    def loosen(t, meta):
        meta["pass_criterion"] = {"tight": 1.0, "coarse": 10.0}

    bad = _copy_golden(tmp_path, FULL, loosen)
    with pytest.raises(GoldenConfigError, match="pass_criterion"):
        check_golden(bad)
    res = _cli(str(bad))
    assert res.returncode == 2 and "pass_criterion" in res.stderr


def test_golden_without_reference_tensors_fails(tmp_path):
    def strip(t, meta):
        for k in [k for k in t if not k.startswith(("model.", "input."))]:
            del t[k]

    bad = _copy_golden(tmp_path, FULL, strip)
    with pytest.raises(GoldenConfigError, match="no reference tensors"):
        check_golden(bad)
    res = _cli(str(bad))
    assert res.returncode == 2 and "no reference tensors" in res.stderr


def test_unknown_scan_fails():
    meta = json.loads(FULL.with_suffix(".json").read_text())
    meta["config"]["ttt"]["scan"] = "zigzag"
    with pytest.raises(GoldenConfigError, match="unknown TTT scan 'zigzag'"):
        config_from_golden(meta)
    meta["config"]["ttt"]["scan"] = "ar"
    assert config_from_golden(meta).scan == "ar"
