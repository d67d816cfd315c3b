"""Deterministic view selection and the paper's evaluation protocol."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tttlrm_ns.data.scene import SceneDataError, load_scene
from tttlrm_ns.data.views import (
    ViewSelectionConfig,
    eval_split,
    kmeans_views,
    paper_protocol,
    select_all,
    select_evenly_spaced,
    select_every_kth,
    select_views,
)

MINI = Path(__file__).parent / "assets" / "mydesk_mini"
SAMPLE = Path(__file__).resolve().parents[1] / "tttlrm_ns" / "assets" / "sample_scene"
MYDESK = Path(__file__).resolve().parents[2] / "shared" / "data" / "mydesk"


def test_simple_selections():
    assert select_all(4) == [0, 1, 2, 3]
    assert select_every_kth(10, 3) == [0, 3, 6, 9]
    assert select_every_kth(10, 3, offset=1) == [1, 4, 7]
    assert select_evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert select_evenly_spaced(100, 5) == [0, 25, 50, 74, 99]
    assert select_evenly_spaced(7, 1) == [3]
    for f in range(1, 40):
        for n in range(1, f + 1):
            sel = select_evenly_spaced(f, n)
            assert len(set(sel)) == n and sel == sorted(sel) and sel[-1] <= f - 1
            if n > 1:
                assert sel[0] == 0 and sel[-1] == f - 1
    with pytest.raises(ValueError, match="k >= 1"):
        select_every_kth(10, 0)


def test_eval_split_every_8th():
    train, test = eval_split(20)
    assert test == [0, 8, 16]
    assert train == [i for i in range(20) if i not in (0, 8, 16)]
    with pytest.raises(ValueError):
        eval_split(20, 1)


def test_kmeans_deterministic_sorted_and_within_candidates():
    c2w = load_scene(MINI).c2w
    cand = [1, 2, 3, 4, 5, 6, 7, 9]
    a = kmeans_views(c2w, 4, cand)
    b = kmeans_views(c2w, 4, cand)
    assert a == b and a == sorted(a) and len(a) == 4 and set(a) <= set(cand)
    # As many clusters as candidates: every candidate chosen exactly once.
    assert kmeans_views(c2w, 8, cand) == cand


def test_kmeans_picks_one_view_per_well_separated_cluster():
    """Three tight clusters of cameras: one frame from each cluster."""
    g = torch.Generator().manual_seed(0)
    c2w = torch.eye(4, dtype=torch.float64).repeat(30, 1, 1)
    centres = torch.tensor([[0.0, 0, 0], [10.0, 0, 0], [0.0, 10, 0]], dtype=torch.float64)
    c2w[:, :3, 3] = centres.repeat_interleave(10, 0) + 0.01 * torch.randn(30, 3, generator=g, dtype=torch.float64)
    sel = kmeans_views(c2w, 3)
    assert sorted(i // 10 for i in sel) == [0, 1, 2]


def test_kmeans_has_no_silent_fallback(monkeypatch):
    """Without scikit-learn the k-means stops with what to install, instead of choosing other views another way."""
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match="scikit-learn.*pip install scikit-learn"):
        kmeans_views(load_scene(MINI).c2w, 4)
    # The other modes need no k-means and still work.
    assert select_views(load_scene(MINI).c2w, ViewSelectionConfig(mode="evenly", num_views=3)) == [0, 5, 9]


@pytest.mark.skipif(not MYDESK.exists(), reason="shared evaluation data not available")
def test_kmeans_reproduces_precomputed_mydesk_inputs():
    """Parity: computed k-means (sklearn, official settings) equals the list shipped with the Long-LRM scene."""
    scene = load_scene(MYDESK, check_images=False)
    pre = scene.precomputed_inputs(32)
    assert pre is not None and len(pre) == 32
    split = paper_protocol(scene, 32, use_precomputed=False)
    assert split.inputs == pre
    assert split.test == list(range(0, len(scene), 8))
    assert not set(split.inputs) & set(split.test)


def test_paper_protocol_uses_precomputed_list(tmp_path):
    dst = tmp_path / "scene"
    shutil.copytree(MINI, dst)
    meta = json.loads((dst / "opencv_cameras.json").read_text())
    meta["fold_8_kmeans_2_input"] = [9, 3]
    (dst / "opencv_cameras.json").write_text(json.dumps(meta))
    scene = load_scene(dst)
    assert paper_protocol(scene, 2).inputs == [3, 9]
    computed = paper_protocol(scene, 2, use_precomputed=False)
    assert len(computed.inputs) == 2 and not set(computed.inputs) & {0, 8}
    assert paper_protocol(scene, 3).test == [0, 8]
    meta["fold_8_kmeans_2_input"] = [3, 12]
    (dst / "opencv_cameras.json").write_text(json.dumps(meta))
    with pytest.raises(SceneDataError, match=r"fold_8_kmeans_2_input holds frame indices \[12\] outside 0..9"):
        paper_protocol(load_scene(dst), 2)


def test_paper_protocol_too_few_frames():
    scene = load_scene(MINI)
    with pytest.raises(SceneDataError, match=r"opencv_cameras.json: 9 input views requested but only 8 frames are available"):
        paper_protocol(scene, 9)


def test_select_views_config():
    c2w = load_scene(MINI).c2w
    assert select_views(c2w, ViewSelectionConfig(mode="all")) == list(range(10))
    assert select_views(c2w, ViewSelectionConfig(mode="every_k", k=4)) == [0, 4, 8]
    assert select_views(c2w, ViewSelectionConfig(mode="evenly", num_views=3)) == [0, 5, 9]  # 4.5 rounds up
    assert len(select_views(c2w, ViewSelectionConfig(mode="kmeans", num_views=5))) == 5


def _pipeline_selection(scene_dir: Path, n: int, use_precomputed: bool = True) -> list[int]:
    """File frames the nerfstudio pipelines choose (``select_input_views`` on the opencv-cameras train split)."""
    from types import SimpleNamespace

    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig
    from tttlrm_ns.ns.pipeline import select_input_views

    outputs = OpencvCamerasDataParserConfig(data=scene_dir).setup().get_dataparser_outputs("train")
    dm = SimpleNamespace(train_dataset=SimpleNamespace(cameras=outputs.cameras), train_dataparser_outputs=outputs)
    pos = select_input_views(dm, ViewSelectionConfig(mode="kmeans", num_views=n), use_precomputed)
    return [outputs.metadata["frame_indices"][p] for p in pos]


@pytest.mark.parametrize("scene_dir, n", [(MINI, 4), (MINI, 5), (SAMPLE, 16), (SAMPLE, 32)])
def test_pipeline_and_paper_protocol_choose_the_same_views(scene_dir, n):
    """One selection: the pipelines' k-means runs on the file's float64 poses, as paper_protocol does. (On these
    cases k-means on nerfstudio's float32 cameras, mapped back to the file's frame, chose other frames: near-ties.)"""
    assert _pipeline_selection(scene_dir, n) == paper_protocol(load_scene(scene_dir), n).inputs


def test_pipeline_and_paper_protocol_agree_on_precomputed_lists(tmp_path):
    dst = tmp_path / "scene"
    shutil.copytree(MINI, dst)
    meta = json.loads((dst / "opencv_cameras.json").read_text())
    meta["fold_8_kmeans_2_input"] = [9, 3]
    meta["fold_8_kmeans_3_input"] = [0, 3, 5]  # frame 0 is held out: made for another split, k-means instead
    (dst / "opencv_cameras.json").write_text(json.dumps(meta))
    scene = load_scene(dst)
    assert _pipeline_selection(dst, 2) == paper_protocol(scene, 2).inputs == [3, 9]
    computed = paper_protocol(scene, 3, use_precomputed=False).inputs
    assert _pipeline_selection(dst, 3) == paper_protocol(scene, 3).inputs == computed
    assert not set(computed) & {0, 8}
