"""Our Prithvi-EO-2.0 encoder equals terratorch 1.2.11's on one shared random state dict (fp32).

The state dict is written as a checkpoint in the published MAE layout (`encoder.*` plus decoder
keys) into an offline Hub cache and loaded by the plugin's own `load()` at full size (100M-TL),
so the strict-loading path with its drop list is the production one.
"""

from __future__ import annotations

import datetime as dt
import functools

import attrs
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("terratorch")
from terratorch.models.backbones.prithvi_vit import PRETRAINED_BANDS, checkpoint_filter_fn_vit  # noqa: E402
from terratorch.registry import BACKBONE_REGISTRY  # noqa: E402

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.errors import SpecError, WeightsError  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, perturbed_state_dict, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_prithvi as rp  # noqa: E402
import rs_embed_prithvi_model as rpm  # noqa: E402

TOL = 1e-5
REVISION = "6" * 40
DATES = [dt.datetime(2022, 6, 12, tzinfo=dt.timezone.utc), dt.datetime(2022, 7, 5, tzinfo=dt.timezone.utc),
         dt.datetime(2022, 7, 28, tzinfo=dt.timezone.utc), dt.datetime(2022, 8, 20, tzinfo=dt.timezone.utc)]
CENTRES = [(121.5, 31.2), (18.4, -33.9), (-60.0, -3.1)]  # (lon, lat), as BatchContext carries them


def _reference(num_frames: int) -> nn.Module:
    """terratorch's backbone built without weights, with the authors' LayerNorm eps (1e-6)."""
    return BACKBONE_REGISTRY.build("prithvi_eo_v2_100_tl", pretrained=False, num_frames=num_frames,
                                   norm_layer=functools.partial(nn.LayerNorm, eps=1e-6)).eval()


def _random_state_dict(reference: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The kit's perturbed init, with the coordinate scales set well above their tiny trained values,
    so every parameter and both side inputs matter."""
    def scales(k: str, v: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
        return torch.tensor([0.5 if "temporal" in k else 0.8]) if k.endswith("embed_enc.scale") else None

    return perturbed_state_dict(reference, seed, override=scales)


def _load_reference(reference: nn.Module, checkpoint: dict[str, torch.Tensor]) -> nn.Module:
    """Load the MAE-format checkpoint the way terratorch does (its own filter, then strict)."""
    sd = checkpoint_filter_fn_vit(dict(checkpoint), reference, PRETRAINED_BANDS, PRETRAINED_BANDS)
    reference.load_state_dict(sd, strict=True)
    return reference


def _ctx(b: int, want: str = "grid", times=None, valid=None, centres=None) -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=tuple(centres or CENTRES[:b]),
                        times=tuple(times or [tuple(DATES)] * b), temporal=None, sensor=None,  # type: ignore[arg-type]
                        want=want, valid=valid)


def _coords(b: int, dates=DATES) -> tuple[torch.Tensor, torch.Tensor]:
    tc = torch.tensor([[(d.year, d.timetuple().tm_yday) for d in dates]] * b, dtype=torch.float32)
    lc = torch.tensor([(lat, lon) for lon, lat in CENTRES[:b]], dtype=torch.float32)
    return tc, lc


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(terratorch reference T=4, our loaded embedder, the MAE-format checkpoint)."""
    root = tmp_path_factory.mktemp("prithvi")
    torch.manual_seed(0)
    ref = _reference(4)
    enc = _random_state_dict(ref)
    checkpoint = {f"encoder.{k}": v for k, v in enc.items()}
    # decoder entries as the published files carry them (names from the MAE layout)
    checkpoint.update({"decoder.mask_token": torch.randn(1, 1, 512), "decoder.decoder_pos_embed": torch.zeros(1, 785, 512),
                       "decoder.temporal_embed_dec.scale": torch.ones(1), "decoder.decoder_pred.bias": torch.zeros(1536)})
    _load_reference(ref, checkpoint)

    ckpt = root / "Prithvi_EO_V2_100M_TL.pt"
    torch.save(checkpoint, ckpt)
    spec = weights_spec_for("ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL", REVISION, ckpt.name, ckpt)
    build_hf_cache(root / "hub", spec.repo_id, REVISION, {ckpt.name: ckpt})
    ckpt.unlink()
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = rp.Prithvi(attrs.evolve(rp.VARIANTS[0], weights=spec), "cpu")
            ours.load()
    finally:
        mp.undo()
    return ref, ours, checkpoint


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 4, 6, 224, 224, generator=g)  # (B, T, C, H, W) as the runner hands it


def test_tokens_equal_terratorch_with_time_and_location(models, frames):
    ref, ours, _ = models
    tc, lc = _coords(2)
    x = frames[:2].transpose(1, 2)  # (B, C, T, H, W)
    with torch.inference_mode():
        expected = ref.forward_features(x, tc, lc)[-1]
        got, grid = ours.net(x, tc, lc)
        no_coords = ref.forward_features(x, None, None)[-1]
    assert grid == (4, 14, 14) and got.shape == expected.shape == (2, 1 + 4 * 196, 768)
    assert float((got - expected).abs().max()) <= TOL
    assert float((no_coords - expected).abs().max()) > 0.1  # the side inputs reach the tokens


def test_embedder_outputs_are_the_reference_tokens_pooled(models, frames):
    """pooled = mean of patch tokens over T and space; grid = per-frame grids averaged over T."""
    ref, ours, _ = models
    tc, lc = _coords(2)
    with torch.inference_mode():
        tokens = ref.forward_features(frames[:2].transpose(1, 2), tc, lc)[-1][:, 1:]
        out = ours.forward(frames[:2], _ctx(2))
    per_frame = tokens.reshape(2, 4, 14, 14, 768).permute(0, 1, 4, 2, 3)
    assert out.pooled.shape == (2, 768) and out.grid.shape == (2, 768, 14, 14)
    assert float((out.pooled - tokens.mean(dim=1)).abs().max()) <= TOL
    assert float((out.grid - per_frame.mean(dim=1)).abs().max()) <= TOL
    assert float((out.extra["frame_grids"] - per_frame).abs().max()) <= TOL
    assert out.extra["frames_used"] == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_single_frame_equals_terratorch_built_for_one_frame(models, frames):
    _, ours, checkpoint = models
    ref1 = _load_reference(_reference(1), checkpoint)
    tc, lc = _coords(2, DATES[1:2])
    x = frames[:2, 1:2].transpose(1, 2)
    with torch.inference_mode():
        expected = ref1.forward_features(x, tc, lc)[-1]
        got, grid = ours.net(x, tc, lc)
        out = ours.forward(frames[:2, 1:2], _ctx(2, "grid", times=[(DATES[1],)] * 2))
    assert grid == (1, 14, 14)
    assert float((got - expected).abs().max()) <= TOL
    assert float((out.pooled - expected[:, 1:].mean(dim=1)).abs().max()) <= TOL


def test_frame_order_and_dates_matter(models, frames):
    _, ours, _ = models
    with torch.inference_mode():
        base = ours.forward(frames[:1], _ctx(1, "pooled")).pooled
        flipped = ours.forward(frames[:1].flip(1), _ctx(1, "pooled")).pooled
        shifted = ours.forward(frames[:1], _ctx(1, "pooled", times=[tuple(d.replace(year=2019) for d in DATES)])).pooled
        moved = ours.forward(frames[:1], _ctx(1, "pooled", centres=[(10.0, 50.0)])).pooled
    for other in (flipped, shifted, moved):
        assert float((other - base).abs().max()) > 1e-3


def test_empty_frame_is_dropped_and_recorded(models, frames):
    """A frame with no valid pixel: the item runs on its other frames, with their own dates."""
    _, ours, _ = models
    valid = np.ones((2, 4, 224, 224), bool)
    valid[0, 2] = False  # item 0: third bin empty
    valid[1, :, :100] = False  # item 1: partly cloudy everywhere, no frame empty
    with torch.inference_mode():
        out = ours.forward(frames[:2], _ctx(2, valid=valid))
        kept = [0, 1, 3]
        alone = ours.forward(frames[:1, kept], _ctx(1, times=[tuple(DATES[k] for k in kept)]))
        full = ours.forward(frames[1:2], _ctx(1, centres=CENTRES[1:2]))
    assert out.extra["frames_used"] == [[0, 1, 3], [0, 1, 2, 3]]
    assert float((out.pooled[0] - alone.pooled[0]).abs().max()) <= TOL
    assert float((out.grid[0] - alone.grid[0]).abs().max()) <= TOL
    assert bool(torch.isnan(out.extra["frame_grids"][0, 2]).all())
    assert float((out.pooled[1] - full.pooled[0]).abs().max()) <= TOL  # partial gaps do not drop frames


def test_all_frames_empty_runs_on_all_of_them(models, frames):
    _, ours, _ = models
    valid = np.zeros((1, 4, 224, 224), bool)
    with torch.inference_mode():
        out = ours.forward(frames[:1], _ctx(1, "pooled", valid=valid))
        plain = ours.forward(frames[:1], _ctx(1, "pooled"))
    assert out.extra["frames_used"] == [[0, 1, 2, 3]]
    assert torch.equal(out.pooled, plain.pooled)


def test_single_equals_batch(models, frames):
    _, ours, _ = models
    with torch.inference_mode():
        batch = ours.forward(frames, _ctx(3))
        for i in range(3):
            one = ours.forward(frames[i : i + 1], _ctx(1, centres=CENTRES[i : i + 1]))
            assert float((one.pooled[0] - batch.pooled[i]).abs().max()) <= TOL
            assert float((one.grid[0] - batch.grid[i]).abs().max()) <= TOL


def test_bad_inputs_are_refused(models):
    _, ours, _ = models
    with pytest.raises(SpecError, match="six HLS bands"):
        ours.forward(torch.zeros(1, 4, 3, 224, 224), _ctx(1, "pooled"))
    with pytest.raises(SpecError, match="multiple of the patch size"):
        ours.forward(torch.zeros(1, 4, 6, 100, 100), _ctx(1, "pooled"))


def test_strict_load_refuses_a_checkpoint_with_an_unknown_key(models, tmp_path, monkeypatch):
    _, _, checkpoint = models
    bad = dict(checkpoint, **{"encoder.extra_head.weight": torch.zeros(3)})
    path = tmp_path / "Prithvi_EO_V2_100M_TL.pt"
    torch.save(bad, path)
    spec = weights_spec_for("ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL", "7" * 40, path.name, path)
    build_hf_cache(tmp_path / "hub", spec.repo_id, spec.revision, {path.name: path})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="extra_head.weight"):
        rp.Prithvi(attrs.evolve(rp.VARIANTS[0], weights=spec)).load()


@pytest.mark.parametrize("name,arch", [("300M-TL", "prithvi_eo_v2_300_tl"), ("600M-TL", "prithvi_eo_v2_600_tl"),
                                       ("300M", "prithvi_eo_v2_300")])
def test_larger_variants_have_terratorchs_keys_and_shapes(name, arch):
    """Structure only (no full-size forward): both built on the meta device."""
    with torch.device("meta"):
        ref = BACKBONE_REGISTRY.build(arch, pretrained=False, num_frames=4)
        ours = rpm.PrithviViT(rp.Prithvi.card.variant(name).params)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k != "pos_embed"}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert rp.Prithvi.card.variant(name).pooled_dim == ref.embed_dim
