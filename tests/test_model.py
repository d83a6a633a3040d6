"""The grounding network: shapes, gradients, the grounding arithmetic, checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the model needs the [export] extra (torch)")

from groundrt.model.checkpoint import load_model, save_model  # noqa: E402
from groundrt.model.config import PRESETS, ConfigError, ModelConfig  # noqa: E402
from groundrt.model.grounding import (  # noqa: E402
    mask_logits,
    mask_phrase_affinity,
    phrase_mask_logits,
    select_queries,
    soft_phrase_probs,
)
from groundrt.model.image_encoder import LOCALITY_GAIN, coordinate_channels  # noqa: E402
from groundrt.model.network import GroundingNet  # noqa: E402

TINY = PRESETS["tiny"]
# the opt-in options: locality channels and a stride-8 query memory
TINY_OPTIONS = replace(TINY, locality_channels=True, memory_stride=8)


def inputs(cfg: ModelConfig, b: int, p: int, t: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, cfg.input_size, cfg.input_size, generator=g)
    tokens = torch.randint(4, cfg.vocab_size, (b, t), generator=g)
    padding = torch.zeros(b, t, dtype=torch.bool)
    padding[0, t - 3:] = True
    starts = torch.randint(1, t - 4, (b, p, 1), generator=g)
    spans = torch.cat([starts, starts + 2], dim=-1)
    return image, tokens, padding, spans


@pytest.mark.parametrize("cfg", [TINY, TINY_OPTIONS], ids=["plain", "options"])
def test_a_top_left_crop_of_the_square_runs(cfg):
    """A 4:3 crop (48 x 64 of the tiny 64 square) gives maps of the crop's shape; its position
    tables are the square's, cropped."""
    torch.manual_seed(0)
    net = GroundingNet(cfg).eval()
    image, tokens, padding, spans = inputs(cfg, 2, 3)
    with torch.no_grad():
        out = net(image[:, :, :48], tokens, padding, spans)
    assert out.pixel_embed.shape == (2, cfg.embed_dim, 12, 16)
    assert out.query_logits.shape == (2, cfg.num_queries, 12, 16)
    assert torch.isfinite(out.mask_embed).all() and torch.isfinite(out.affinity).all()
    square = coordinate_channels(torch.zeros(1, 1, 16, 16), 16)
    np.testing.assert_array_equal(coordinate_channels(torch.zeros(1, 1, 12, 16), 16).numpy(),
                                  square[..., :12, :].numpy())
    for bad in ((40, 64), (80, 64), (64, 0)):  # not a multiple of 16, beyond the square, empty
        with pytest.raises(ConfigError, match="not a crop"):
            net.image_encoder(torch.zeros(1, 3, *bad))


@pytest.mark.parametrize("cfg", [TINY, TINY_OPTIONS], ids=["plain", "options"])
@pytest.mark.parametrize("p", [0, 1, 30])
def test_output_shapes_and_dtypes(p, cfg):
    torch.manual_seed(0)
    net = GroundingNet(cfg).eval()
    with torch.no_grad():
        out = net(*inputs(cfg, 2, p))
    h = TINY.input_size // TINY.pixel_stride
    d, q = TINY.embed_dim, TINY.num_queries
    assert out.pixel_embed.shape == (2, d, h, h)
    assert out.mask_embed.shape == (2, q, d)
    assert out.phrase_embed.shape == (2, p, d)
    assert out.affinity.shape == (2, p, q)
    assert out.query_logits.shape == (2, q, h, h)
    for tensor in (out.pixel_embed, out.mask_embed, out.phrase_embed, out.affinity):
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
    plural = torch.zeros(2, p, dtype=torch.bool)
    plural[:, ::2] = True
    selected = select_queries(out.affinity, plural, TINY.plural_threshold)
    assert selected.shape == (2, p, q) and selected.dtype == torch.bool
    logits = phrase_mask_logits(selected, out.query_logits)
    assert logits.shape == (2, p, h, h) and torch.isfinite(logits).all()


def test_gradients_reach_both_paths():
    torch.manual_seed(0)
    net = GroundingNet(TINY)
    image, tokens, padding, spans = inputs(TINY, 2, 3)
    out = net(image, tokens, padding, spans)
    plural = torch.tensor([[True, False, False], [False, True, False]])
    soft_phrase_probs(out.affinity, plural, out.query_logits).mean().backward()
    for name in ("image_encoder.backbone.stem.0.0.weight", "text_encoder.embed.weight",
                 "text_encoder.layers.layers.0.self_attn.in_proj_weight", "logit_scale",
                 "image_encoder.query_decoder.queries"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_locality_channels_are_fixed_and_let_a_query_isolate_the_middle_instance():
    torch.manual_seed(0)
    net = GroundingNet(TINY_OPTIONS).eval()
    with torch.no_grad():
        out = net(*inputs(TINY_OPTIONS, 2, 1))
    h = TINY.input_size // TINY.pixel_stride
    grid = torch.linspace(-1, 1, h)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    expected = LOCALITY_GAIN * torch.stack([torch.ones_like(x), x, y, x * x + y * y])
    assert torch.allclose(out.pixel_embed[0, -4:], expected)
    assert torch.equal(out.pixel_embed[0, -4:], out.pixel_embed[1, -4:])
    # three identical instances in a row: a bump at the middle one's centre beats both others
    a, centre = 20.0, torch.tensor([0.0, 0.0])
    embed = a * torch.tensor([-(centre**2).sum() + 0.05, 2 * centre[0], 2 * centre[1], -1.0])
    logits = torch.einsum("d,dhw->hw", embed, expected)  # the last 4 entries' share of a logit
    row = logits[h // 2]
    assert row[h // 2] > 0 > row[0] and row[h // 2] > row[-1]


def test_matching_recovers_each_images_permutation_in_one_call():
    """Hungarian matching of several images at once (one host copy): each query that is a sharp
    copy of a segment is matched to it, whatever the images' segment counts."""
    from groundrt.train.losses import match_queries

    g = torch.Generator().manual_seed(0)
    logits, targets, truth = [], [], []
    for n in (3, 7, 1):
        segments = (torch.rand(n, 64, generator=g) > 0.5).float()
        queries = torch.randperm(8, generator=g)[:n]  # query queries[k] holds segment k
        image_logits = torch.full((8, 64), -8.0)
        image_logits[queries] = segments * 16 - 8
        logits.append(image_logits)
        targets.append(segments)
        truth.append(dict(zip(queries.tolist(), range(n), strict=True)))
    for (rows, cols), expected in zip(match_queries(logits, targets), truth, strict=True):
        assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == expected


def test_grounding_arithmetic_against_numpy():
    g = torch.Generator().manual_seed(1)
    phrase = torch.randn(1, 3, 8, generator=g)
    masks = torch.randn(1, 5, 8, generator=g)
    pixels = torch.randn(1, 8, 4, 6, generator=g)
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)
    aff = mask_phrase_affinity(phrase, masks, scale, bias)[0].numpy()
    p = phrase[0].numpy() / np.linalg.norm(phrase[0].numpy(), axis=-1, keepdims=True)
    m = masks[0].numpy() / np.linalg.norm(masks[0].numpy(), axis=-1, keepdims=True)
    np.testing.assert_allclose(aff, np.exp(2.0) * p @ m.T - 1.0, rtol=1e-5, atol=1e-5)

    query = mask_logits(masks, pixels)[0].numpy()
    np.testing.assert_allclose(query, np.einsum("qd,dhw->qhw", masks[0].numpy(),
                                                pixels[0].numpy()), rtol=1e-5, atol=1e-5)
    plural = torch.tensor([[False, True, True]])
    affinity = torch.tensor([[[5.0, 1, 0, 0, 0], [3.0, 2.0, -4, -4, -4], [-9.0, -9, -9, -9, -8]]])
    selected = select_queries(affinity, plural, 0.5)[0].numpy()
    assert selected.tolist() == [[True, False, False, False, False],
                                 [True, True, False, False, False],
                                 [False, False, False, False, True]]  # top-1 at least
    logits = phrase_mask_logits(torch.from_numpy(selected)[None], mask_logits(masks, pixels))
    np.testing.assert_allclose(logits[0, 1].numpy(), np.maximum(query[0], query[1]), rtol=1e-6)


@pytest.mark.parametrize("cfg", [TINY, TINY_OPTIONS], ids=["plain", "options"])
def test_checkpoint_round_trip_is_bit_exact(tmp_path, cfg):
    torch.manual_seed(3)
    net = GroundingNet(cfg)
    net.train()
    net(*inputs(cfg, 2, 2))  # moves the BatchNorm running statistics
    save_model(tmp_path / "run", net)
    loaded = load_model(tmp_path / "run")
    assert loaded.cfg == cfg
    for (name, a), b in zip(net.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    net.eval(), loaded.eval()
    with torch.no_grad():
        x = inputs(cfg, 1, 4)
        assert torch.equal(net(*x).affinity, loaded(*x).affinity)


def test_wrong_config_is_a_clear_error(tmp_path):
    save_model(tmp_path / "run", GroundingNet(TINY))
    with pytest.raises(ConfigError, match=r"does not match the model config \(image_encoder\."
                       r"pixel_decoder.head.1.bias: checkpoint \(16,\) vs config \(32,\)"):
        load_model(tmp_path / "run", replace(TINY, embed_dim=TINY.embed_dim * 2))
    (tmp_path / "run" / "config.json").write_text(json.dumps({**TINY.to_json(), "depth": 3}))
    with pytest.raises(ConfigError, match="unknown model config keys: \\['depth'\\]"):
        load_model(tmp_path / "run")
    with pytest.raises(ConfigError, match="pixel_stride must be 2, 4 or 8, not 3"):
        replace(TINY, pixel_stride=3)
    with pytest.raises(ConfigError, match="memory_stride must be 8 or 16, not 32"):
        replace(TINY, memory_stride=32)
    with pytest.raises(ConfigError, match="locality_channels needs embed_dim > 4"):
        replace(TINY, embed_dim=4, locality_channels=True)
