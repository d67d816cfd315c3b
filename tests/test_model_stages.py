"""The model's public stages (encode -> run_blocks -> decode, chunked decode, pruning) and the paths built on them.

``forward``, the nerfstudio prediction (``tttlrm_ns.infer.predict``), streaming and the triplane model all run these
stages; the tests hold each composition to ``forward`` bitwise where the arithmetic is the same, and the official
sequence layout (``duplicate_virtual_views``) to the default one on every path.
"""

import pytest
import torch

from tttlrm_ns.gaussians import PruneConfig, prune
from tttlrm_ns.model import TttlrmModel, presets
from tttlrm_ns.model.blocks import LaCTBlock
from tttlrm_ns.triplane.model import TriplaneModel, preset
from tttlrm_ns.infer.predict import estimate_memory, predict_gaussians

FIELDS = ("means", "sh", "log_scales", "quats", "opacity_logits")


def _inputs(b=1, v=4, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, v, 3, h, w, generator=g)
    c2w = torch.eye(4).repeat(b, v, 1, 1)
    c2w[:, :, 0, 3] = torch.linspace(-0.5, 0.5, v)
    c2w[:, :, 2, 3] = 0.2 * torch.rand(b, v, generator=g)
    k = torch.tensor([20.0, 21.0, w / 2, h / 2]).repeat(b, v, 1)
    return images, c2w, k


def _model(**kw):
    torch.manual_seed(0)
    m = TttlrmModel(presets.tiny(sh_degree=1, ns_dtype="float32", ar_chunk_views=2, **kw))
    with torch.no_grad():  # non-trivial TTT rates and decoder, as the goldens have
        for name, p in m.named_parameters():
            if "lr_fc.bias" in name:
                p.normal_(0, 0.5)
            if name == "decoder.1.weight":
                p.normal_(0, 1.5 / m.cfg.d**0.5)
    return m.eval()


def _same(a, b):
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


LAYOUTS = [dict(scan="full"), dict(scan="ar"), dict(scan="full", duplicate_virtual_views=True),
           dict(scan="ar", duplicate_virtual_views=True)]


@pytest.mark.parametrize("kw", LAYOUTS, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("subset", [None, [3, 1]])
def test_forward_is_the_composition_of_the_stages(kw, subset):
    m = _model(**kw)
    images, c2w, k = _inputs(b=2)
    idx = None if subset is None else torch.tensor(subset)
    with torch.no_grad():
        ref = m(images, c2w, k, virtual_view_indices=idx, return_intermediates=True)
        inter = {}
        x = m.encode(images, c2w, k, intermediates=inter)
        assert x.shape == (2, 4 * 6, m.cfg.d)  # [B, V*n, d], n = (16/8) * (24/8)
        blocks = m.run_blocks(x, m.tokens_per_view(16, 24), idx, intermediates=inter)
        vq = 4 if subset is None else len(subset)
        assert blocks.tokens.shape == (2, vq * 6, m.cfg.d) and len(blocks.states) == m.cfg.n_layer
        sel = slice(None) if idx is None else idx
        out = m.decode(blocks.tokens, c2w[:, sel], k[:, sel], 16, 24)
    _same(out.gaussians, ref.gaussians)
    assert torch.equal(out.raw, ref.raw)
    assert inter.keys() == ref.intermediates.keys()
    for key in inter:
        assert torch.equal(inter[key], ref.intermediates[key]), key
    # the official layout runs the decoded views twice through the blocks
    length = 4 * 6 + (vq * 6 if kw.get("duplicate_virtual_views") else 0)
    assert inter["tokens"].shape[1] == length


@pytest.mark.parametrize("scan", ["full", "ar", "stream"])
def test_duplicate_virtual_views_gives_the_default_output_in_every_scan(scan):
    x = _inputs()
    with torch.no_grad():
        a = _model(scan=scan, duplicate_virtual_views=True)(*x)
        b = _model(scan=scan)(*x)
    # The copies read the same final fast weights as their twins; only the matmul row count differs.
    for f in FIELDS:
        torch.testing.assert_close(getattr(a.gaussians, f), getattr(b.gaussians, f), rtol=1e-5, atol=1e-5)


def test_chunked_encode_and_decode_equal_the_whole():
    m = _model()
    images, c2w, k = _inputs(v=5)
    with torch.no_grad():
        whole = m.encode(images, c2w, k)
        inter = {}
        for chunk in (1, 2, 5, 9):
            # the embedding matmul over fewer rows may round differently in the last bit
            torch.testing.assert_close(m.encode(images, c2w, k, chunk, intermediates=inter), whole,
                                       rtol=1e-5, atol=1e-5)
            assert inter["model_input_views"].shape == (1, 5, 12, 16, 24)
        tokens = m.run_blocks(whole, 6).tokens
        ref = m.decode(tokens, c2w, k, 16, 24).gaussians
        parts = list(m.decode_chunks(tokens, c2w, k, 16, 24, 2))
    assert [(s, e) for s, e, _ in parts] == [(0, 2), (2, 4), (4, 5)]
    for f in FIELDS:  # the decoder is per token: chunks are the same rows
        torch.testing.assert_close(torch.cat([getattr(g, f) for _, _, g in parts], 1), getattr(ref, f),
                                   rtol=1e-6, atol=1e-6)


def test_decode_pruned_equals_prune_of_decode():
    m = _model()
    images, c2w, k = _inputs()
    cfg = PruneConfig(keep_top=0.4, keep_random=0.1)
    with torch.no_grad():
        tokens = m.run_blocks(m.encode(images, c2w, k), 6).tokens
        full = m.decode(tokens, c2w, k, 16, 24).gaussians[0]
        got = m.decode_pruned(tokens, c2w, k, 16, 24, cfg, None, torch.Generator().manual_seed(3))
        # chunks of 3 views: a matmul over fewer rows may round differently in the last bit on another CPU
        chunked = m.decode_pruned(tokens, c2w, k, 16, 24, None, 3)
        for f in FIELDS:
            torch.testing.assert_close(getattr(chunked, f), getattr(full, f), rtol=1e-6, atol=1e-6)
        # num_views picks the many-view fractions (the input view count, not the decoded one)
        many = m.decode_pruned(tokens, c2w, k, 16, 24, cfg, None, torch.Generator().manual_seed(3), num_views=64)
        with pytest.raises(ValueError, match="one scene"):
            m.decode_pruned(tokens.expand(2, -1, -1), c2w.expand(2, -1, -1, -1), k.expand(2, -1, -1), 16, 24, cfg)
    _same(got, prune(full, cfg, 4, torch.Generator().manual_seed(3)))
    assert many.num == prune(full, cfg, 64, torch.Generator().manual_seed(3)).num < got.num


@pytest.mark.parametrize("scan", ["full", "ar", "stream"])
def test_prediction_honours_duplicate_virtual_views(scan):
    """The nerfstudio prediction runs the same stages: with the official layout it equals forward, too."""
    m = _model(scan=scan, duplicate_virtual_views=True)
    images, c2w, k = _inputs()
    with torch.no_grad():
        ref = m(images, c2w, k).gaussians[0]
        default = _model(scan=scan)(images, c2w, k).gaussians[0]
    _same(predict_gaussians(m, images[0], c2w[0], k[0], prune=None, chunk_views=4), ref)
    got = predict_gaussians(m, images[0], c2w[0], k[0], prune=None, chunk_views=3)
    for f in FIELDS:
        torch.testing.assert_close(getattr(got, f), getattr(ref, f), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(getattr(got, f), getattr(default, f), rtol=1e-5, atol=1e-5)


def test_stream_step_is_the_stages_with_carried_states():
    m = _model(scan="stream")
    images, c2w, k = _inputs()
    with torch.no_grad():
        out, states = m.stream_step(images[:, :2], c2w[:, :2], k[:, :2])
        blocks = m.run_blocks(m.encode(images[:, :2], c2w[:, :2], k[:, :2]), 6)
        _same(m.decode(blocks.tokens, c2w[:, :2], k[:, :2], 16, 24).gaussians, out.gaussians)
        out2, _ = m.stream_step(images[:, 2:], c2w[:, 2:], k[:, 2:], states)
        blocks2 = m.run_blocks(m.encode(images[:, 2:], c2w[:, 2:], k[:, 2:]), 6, states=blocks.states)
        _same(m.decode(blocks2.tokens, c2w[:, 2:], k[:, 2:], 16, 24).gaussians, out2.gaussians)


def test_memory_estimate_counts_the_duplicated_sequence():
    cfg = presets.small_d256()
    a = estimate_memory(cfg, 8, 128, 128, num_params=1)
    b = estimate_memory(cfg.replace(duplicate_virtual_views=True), 8, 128, 128, num_params=1)
    assert b.tokens == 2 * a.tokens and b.activations == 2 * a.activations
    assert b.decode_chunk == a.decode_chunk and b.gaussians == a.gaussians


# --- the triplane model on the shared backbone ------------------------------------------------------------------


def test_query_group_attention_is_two_separate_groups():
    """``query_tokens``: the image tokens attend per view, the queries among themselves (the triplane layout)."""
    torch.manual_seed(0)
    cfg = presets.tiny(ns_dtype="float32")
    attn = LaCTBlock(cfg).module_list[0].f
    x = torch.randn(2, 3 * 4 + 5, cfg.d)  # 3 views of 4 tokens + 5 queries
    with torch.no_grad():
        got = attn(x, 4, query_tokens=5)
        torch.testing.assert_close(got[:, :12], attn(x[:, :12], 4), rtol=0, atol=0)
        torch.testing.assert_close(got[:, 12:], attn(x[:, 12:], 5), rtol=0, atol=0)


def test_triplane_uses_the_backbone_stages():
    cfg, tri = preset("triplane_tiny")
    torch.manual_seed(0)
    model = TriplaneModel(cfg, tri).eval()
    images, c2w, k = _inputs(v=2, h=16, w=16)
    with torch.no_grad():
        out = model(images, c2w, k, return_fast_weights=True)
        # the same planes from the shared stages: encode, the block stack with a query group, the plane decoder
        n = model.tokens_per_view(16, 16)
        q = model.input_layernorm(model.plane_queries[None])
        x = torch.cat([model.encode(images, c2w, k), q], 1)
        x, states = model._run_stack(x, n, model.schedule(2, n, x.shape[1]), query_tokens=q.shape[1])
        raw = model.plane_decoder(x[:, 2 * n:])
    t, c, p = tri.tokens_per_side, tri.channels, cfg.patch_size
    planes = raw.view(1, 3, t, t, p, p, c).permute(0, 1, 6, 2, 4, 3, 5).reshape(1, 3, c, t * p, t * p)
    assert torch.equal(out.planes, planes)
    for a, b in zip(out.fast_weights, states):
        for wa, wb in zip(a.weights, b.weights):
            assert torch.equal(wa, wb)


def test_triplane_refuses_the_official_sequence_layout():
    cfg, tri = preset("triplane_tiny", duplicate_virtual_views=True)
    with pytest.raises(ValueError, match="duplicate_virtual_views has no meaning for the triplane model"):
        TriplaneModel(cfg, tri)
