"""opencv-cameras ``train_frames``: the train split restricted to a frame list (baselines see only the N inputs)."""

from pathlib import Path

import pytest
import torch

from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig

MINI = Path(__file__).parent / "assets" / "mydesk_mini"  # 10 frames; interval 8 holds out frames 0 and 8


def parse(split="train", **kw):
    return OpencvCamerasDataParserConfig(data=MINI, **kw).setup().get_dataparser_outputs(split)


def test_train_split_restricted_eval_and_frame_unchanged():
    full_tr, full_te = parse("train"), parse("test")
    tr = parse("train", train_frames=(7, 2, 5))
    te = parse("test", train_frames=(7, 2, 5))
    assert tr.metadata["frame_indices"] == [2, 5, 7]
    assert [p.name for p in tr.image_filenames] == [full_tr.image_filenames[full_tr.metadata["frame_indices"].index(f)].name
                                                    for f in (2, 5, 7)]
    # The held-out frames and the world frame do not depend on the restriction.
    assert te.metadata["frame_indices"] == full_te.metadata["frame_indices"] == [0, 8]
    assert tr.dataparser_scale == full_tr.dataparser_scale
    pos = [full_tr.metadata["frame_indices"].index(f) for f in (2, 5, 7)]
    torch.testing.assert_close(tr.cameras.camera_to_worlds, full_tr.cameras.camera_to_worlds[pos])


@pytest.mark.parametrize("frames, words", [((0, 3), "not in the train split"), ((3, 10), "outside 0..9"), ((), "empty")])
def test_bad_train_frames_named(frames, words):
    with pytest.raises(ValueError, match=words) as e:
        parse("train", train_frames=frames)
    assert "train-frames" in str(e.value)
