"""Our SatVision-TOA encoder equals timm 1.0.31's SwinV2 on one shared random state dict (fp32), at a small config.

The state dict is written as the published checkpoint lays it out (a DeepSpeed file whose "module"
entry holds `encoder.*` with its stored buffers and mask token, plus `decoder.*`), served from an
offline Hub cache and loaded by the plugin's own `load()`: the production strict-loading path.
timm has no SwinV2-G extra norm; the reference gets it by wrapping the blocks that carry one in
`Sequential(block, LayerNorm)`, which is what the authors' block does (norm3 after both residuals).
"""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.errors import SpecError, WeightsError  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, perturbed_state_dict, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_satvision as rs  # noqa: E402

TOL = 1e-5
REVISION = "5" * 40
# Small: 64 px, patch 4 -> 16, 8, 4, 2 tokens a side; window 4 (shifted, masked windows in stages 0-1,
# one whole-map window in stages 2-3); norm_period 3 puts norm3 on blocks 2 and 5 of stage 2.
SMALL = {**rs.GIANT, "img_size": 64, "embed_dim": 16, "depths": [2, 2, 6, 2], "heads": [1, 2, 2, 4],
         "window": 4, "norm_period": 3}
EXTRA_NORMS = ((2, 2), (2, 5))  # (stage, block)
SMALL_VARIANT = attrs.evolve(rs.VARIANTS[0], name="small", pooled_dim=128, grid_dim=128, params=SMALL)


def _reference() -> nn.Module:
    ref = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=64, in_chans=14, embed_dim=16,
                            depths=(2, 2, 6, 2), num_heads=(1, 2, 2, 4), window_size=4, num_classes=0)
    for stage, block in EXTRA_NORMS:
        blocks = ref.layers[stage].blocks
        blocks[block] = nn.Sequential(blocks[block], nn.LayerNorm(16 * 2**stage))
    return ref.eval()


def _ours_name(key: str) -> str:
    """timm key -> the checkpoint's encoder key: timm merges patches at the start of the next stage, the
    authors at the end of the stage; the wrapped blocks' norm is the authors' norm3."""
    parts = key.split(".")
    if parts[0] == "layers" and parts[2] == "downsample":
        parts[1] = str(int(parts[1]) - 1)
    name = ".".join(parts)
    for stage, block in EXTRA_NORMS:
        prefix = f"layers.{stage}.blocks.{block}."
        name = name.replace(prefix + "0.", prefix).replace(prefix + "1.", prefix + "norm3.")
    return name


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("satvision")
    torch.manual_seed(0)
    ref = _reference()
    sd = perturbed_state_dict(ref, seed=1)
    ref.load_state_dict(sd, strict=True)
    encoder = {f"encoder.{_ours_name(k)}": v for k, v in sd.items()}
    # what the published file also holds: stored buffers, the mask token, the decoder, DeepSpeed metadata
    encoder.update({"encoder.mask_token": torch.zeros(1, 1, 16),
                    "encoder.layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16),
                    "encoder.layers.0.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
                    "encoder.layers.0.blocks.0.attn.relative_coords_table": torch.zeros(1, 7, 7, 2),
                    "decoder.0.weight": torch.zeros(32 * 32 * 14, 128, 1, 1), "decoder.0.bias": torch.zeros(32 * 32 * 14)})
    ckpt = root / rs.HUB_FILE
    torch.save({"module": encoder, "buffer_names": ["x"], "ds_version": "0.14.0", "param_shapes": [{}]}, ckpt)
    spec = weights_spec_for(rs.HUB_REPO, REVISION, ckpt.name, ckpt, license="apache-2.0")
    build_hf_cache(root / "hub", spec.repo_id, REVISION, {ckpt.name: ckpt})
    ckpt.unlink()
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = rs.SatVision(attrs.evolve(SMALL_VARIANT, weights=spec), "cpu")
            ours.load()
            # a checkpoint of another architecture (the giant's first key shapes differ): refused, keys named
            wrong = rs.SatVision(attrs.evolve(SMALL_VARIANT, weights=spec,
                                              params={**SMALL, "embed_dim": 32}), "cpu")
            with pytest.raises(WeightsError, match="patch_embed.proj.weight"):
                wrong.load()
    finally:
        mp.undo()
    return ref, ours


def _ctx(b: int, want: str = "grid") -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=None,  # type: ignore[arg-type]
                        want=want, band_names=rs.BANDS)


def test_tokens_equal_timm_swinv2(models):
    ref, ours = models
    x = torch.randn(3, 14, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = ref.forward_features(x).permute(0, 3, 1, 2)  # NHWC after the final norm
        got = ours.net(x)
    assert got.shape == expected.shape == (3, 128, 2, 2)
    assert float((got - expected).abs().max()) <= TOL
    assert float(expected.std()) > 0.1  # not a degenerate output


def test_embedder_pools_the_reference_grid_and_keeps_spatial_order(models):
    ref, ours = models
    x = torch.randn(2, 1, 14, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = ref.forward_features(x[:, 0]).permute(0, 3, 1, 2)
        out = ours.forward(x, _ctx(2))
    assert float((out.grid - expected).abs().max()) <= TOL
    assert float((out.pooled - expected.mean(dim=(2, 3))).abs().max()) <= TOL
    # grid[:, :, row, col] is where it is on the ground: a change in one corner of the image moves that cell most
    for row, col in ((0, 0), (0, 1), (1, 0)):
        y = x.clone()
        y[..., row * 32:(row + 1) * 32, col * 32:(col + 1) * 32] += 3.0
        with torch.inference_mode():
            moved = (ours.forward(y, _ctx(2)).grid - out.grid).abs().mean(dim=(0, 1))
        assert divmod(int(moved.argmax()), 2) == (row, col)


def test_extra_norm_matters(models):
    """norm3 is loaded and applied: zeroing its gain changes the output."""
    _, ours = models
    x = torch.randn(1, 14, 64, 64, generator=torch.Generator().manual_seed(5))
    norm3 = ours.net.layers[2].blocks[5].norm3
    with torch.inference_mode():
        before = ours.net(x)
        saved = norm3.weight.clone()
        norm3.weight.mul_(0.5)
        after = ours.net(x)
        norm3.weight.copy_(saved)
    assert isinstance(ours.net.layers[2].blocks[4].norm3, nn.Identity)
    assert float((before - after).abs().max()) > 1e-3


def test_wrong_input_size_is_a_typed_error(models):
    _, ours = models
    with pytest.raises(SpecError, match="takes"):
        ours.net(torch.zeros(1, 14, 32, 32))
