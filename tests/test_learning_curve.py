"""tttlrm_ns/eval/learning_curve.py: the log2 fit, its extrapolation, and reading both kinds of result files."""

from __future__ import annotations

import json
import math

import pytest

from tttlrm_ns.eval import learning_curve as m


def test_fit_recovers_a_log_linear_curve_and_extrapolates():
    steps = [1000, 2000, 4000, 8000]
    a, b = m.fit_log2(steps, [20.0 + 0.5 * math.log2(s / 1000) for s in steps])
    assert b == pytest.approx(0.5) and a + b * math.log2(1000) == pytest.approx(20.0)
    assert m.steps_to_reach(a, b, 22.0) == pytest.approx(1000 * 2**4)  # 2 dB at 0.5 dB per doubling
    assert math.isinf(m.steps_to_reach(a, -0.1, 22.0))
    with pytest.raises(ValueError, match="two or more"):
        m.fit_log2([1000, 1000], [20.0, 21.0])


def test_reads_holdout_and_eval_results_and_writes_the_figure(tmp_path, capsys):
    (tmp_path / "h1.json").write_text(json.dumps({"psnr": 21.0, "per_scene": []}))
    (tmp_path / "h2.json").write_text(json.dumps({"psnr": 22.0}))
    (tmp_path / "g.json").write_text(json.dumps({"entries": {"tttlrm": {"psnr": 17.0}, "white": {"psnr": 15.0}}}))
    (tmp_path / "bad.json").write_text(json.dumps({"ssim": 0.5}))
    out = tmp_path / "curve.png"
    assert m.main(["--series", "synthetic", f"1000={tmp_path / 'h1.json'}", f"4000={tmp_path / 'h2.json'}",
                   "--series", "real", f"4000={tmp_path / 'g.json'}", "--target", "23", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| synthetic | 1000: 21.00, 4000: 22.00 | +0.50 | 1.6e+04 |" in text
    assert "| real | 4000: 17.00 | - | - |" in text
    assert out.stat().st_size > 1000
    assert m.main(["--series", "synthetic", f"1000={tmp_path / 'h1.json'}", f"4000={tmp_path / 'h2.json'}",
                   "--target", "23", "--target-only", "real", "--out", str(out)]) == 0
    assert "| synthetic | 1000: 21.00, 4000: 22.00 | +0.50 | - |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="neither"):
        m.result_psnr(tmp_path / "bad.json")
