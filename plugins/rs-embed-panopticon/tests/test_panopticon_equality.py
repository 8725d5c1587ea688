"""Our Panopticon network equals torchgeo 0.8.1's on one shared random state dict (full-size ViT-B/14, fp32).

The state dict has the released teacher file's keys (a 37 x 37 position table and DINOv2's
mask_token), is written as a .pth into an offline Hub cache and loaded by the plugin's own `load()`
(strictly, converted once to safetensors): the production weights path at full size. torchgeo gets
the same tensors the way its weights loader prepares them (mask_token popped, table resized by its
`resize_abs_pos_embed`), and our network runs with torchgeo's resize for the comparison; the
authors' resize (the default) is checked separately against the same network.
"""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F

pano_ref = pytest.importorskip("torchgeo.models.panopticon")
from torchgeo.models.copernicusfm import resize_abs_pos_embed  # noqa: E402

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.errors import SpecError, UnknownBandError  # noqa: E402
from rs_embed_core.specs import SensorSpec  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_panopticon as rp  # noqa: E402
import rs_embed_panopticon_model as rpm  # noqa: E402

TOL = 1e-5
REVISION = "9" * 40
S2 = SensorSpec(rp.S2_COLLECTION, rp.S2_BANDS, 10)
S1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)
L8 = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B3", "SR_B2", "SR_B5"), 30)
MIXED = ((SensorSpec(rp.S2_COLLECTION, ("B4", "B8", "B11"), 10), S1), ("VH", "B4", "B8", "VV", "B11"))


def _ctx(sensor, bands=None, want: str = "grid") -> BatchContext:
    bands = tuple(bands or sensor.bands)
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=sensor,  # type: ignore[arg-type]
                        want=want, band_names=bands)


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Make every part matter: LayerScale gammas (init 1e-5) near 0.5, norms and biases off their
    defaults, and the zero-initialised SAR embeddings and class token random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 or "chnemb" in name or name in ("cls_token", "patch_embed.chnfus.query"):
                p.copy_((0.5 if "chnemb" in name or "query" in name or "cls" in name else 0.05)
                        * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(torchgeo reference, our embedder loaded from an offline Hub cache, the 37 x 37 table)."""
    root = tmp_path_factory.mktemp("panopticon")
    torch.manual_seed(0)
    ref = pano_ref.panopticon_vitb14().eval()
    _perturb(ref.model)
    table = 0.5 * torch.randn(1, 1 + 37 * 37, 768, generator=torch.Generator().manual_seed(1))
    sd = {k: v.detach().clone() for k, v in ref.model.state_dict().items()}
    sd["pos_embed"] = table
    sd["mask_token"] = torch.zeros(1, 768)  # in the teacher file, unused at inference
    ckpt = root / rp.BASE.weights.filename
    torch.save(sd, ckpt)
    del sd
    spec = weights_spec_for(rp.REPO_ID, REVISION, ckpt.name, ckpt)
    build_hf_cache(root / "hub", rp.REPO_ID, REVISION, {ckpt.name: ckpt})
    variant = attrs.evolve(rp.BASE, weights=spec, params={**rp.BASE.params, "pos_resize": "torchgeo"})
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = rp.Panopticon(variant, "cpu")
            ours.load()
    finally:
        mp.undo()
    ckpt.unlink()
    return ref, ours, table


def _torchgeo_table(table: torch.Tensor, side: int) -> torch.Tensor:
    """What torchgeo's weights loader does to the 37 x 37 table for a model built for side * 14 px."""
    return resize_abs_pos_embed(table, side, 518 // 14)


def _reference(ref, x: torch.Tensor, ids: list[float], pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchgeo's pooled output and normed patch tokens, its position table set to `pos` (torchgeo fixes
    the table size at construction; the same network serves 224 px and the cheaper 112 px cases)."""
    ref.model.pos_embed = torch.nn.Parameter(pos, requires_grad=False)
    side = x.shape[-1] // 14
    chn = torch.tensor([ids] * x.shape[0], dtype=torch.float32)  # torchgeo floors these in place
    with torch.inference_mode():
        feats = ref.model.forward_features({"imgs": x, "chn_ids": chn})
        pooled = ref({"imgs": x, "chn_ids": chn.clone()})
    b, n, d = feats.shape
    return pooled, feats[:, 1:].transpose(1, 2).reshape(b, d, side, side)


# The card's 224 px once (13 bands); the other cases at 112 px (8 x 8 patches), which exercise the same
# code for a quarter of the CPU time.
CASES = [(S2, None, 224, 1), (S1, None, 112, 2), (L8, None, 112, 1), (*MIXED, 112, 1)]


@pytest.mark.parametrize("sensor,bands,size,b", CASES, ids=["sentinel2-l1c", "sentinel1", "landsat8", "s2+s1-mixed"])
def test_pooled_and_grid_equal_torchgeo(models, sensor, bands, size, b):
    ref, ours, table = models
    ctx = _ctx(sensor, bands)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, 1, len(ctx.band_names), size, size, generator=g)
    side = size // 14
    exp_pooled, exp_grid = _reference(ref, x[:, 0], list(rp.channel_ids(sensor, ctx.band_names)),
                                      _torchgeo_table(table, side))
    with torch.inference_mode():
        out = ours.forward(x, ctx)
    assert out.pooled.shape == (b, 768) and out.grid.shape == (b, 768, side, side)
    assert float((out.pooled - exp_pooled).abs().max()) <= TOL
    assert float((out.grid - exp_grid).abs().max()) <= TOL
    assert float(exp_grid.std()) > 0.1 and float(exp_pooled.std()) > 0.1  # not a degenerate comparison


def test_authors_position_resize(models):
    """Default mode = DINOv2's interpolate_pos_encoding as the authors' code calls it (bicubic, scale factor
    (n + 0.1) / 37, no antialias); equal to torchgeo's network given that table, and not torchgeo's own."""
    ref, ours, table = models
    patches = table[:, 1:].reshape(1, 37, 37, 768).permute(0, 3, 1, 2)

    def authors(n: int) -> torch.Tensor:
        out = F.interpolate(patches, scale_factor=((n + 0.1) / 37, (n + 0.1) / 37), mode="bicubic", antialias=False)
        return out.permute(0, 2, 3, 1).reshape(1, n * n, 768)

    assert torch.equal(rpm.resize_pos_table(table[:, 1:], (16, 16), "dinov2"), authors(16))  # the card's 224 px
    assert torch.equal(rpm.resize_pos_table(table[:, 1:], (37, 37), "dinov2"), table[:, 1:])  # native grid: as is
    s2 = SensorSpec(rp.S2_COLLECTION, ("B2", "B3", "B4", "B8"), 10)
    x = torch.randn(1, 1, 4, 112, 112, generator=torch.Generator().manual_seed(4))
    ids = list(rp.channel_ids(s2, s2.bands))
    torchgeo_pooled, _ = _reference(ref, x[:, 0], ids, _torchgeo_table(table, 8))
    exp_pooled, exp_grid = _reference(ref, x[:, 0], ids, torch.cat([table[:, :1], authors(8)], dim=1))
    ours.model.pos_resize = "dinov2"
    try:
        with torch.inference_mode():
            out = ours.forward(x, _ctx(s2))
    finally:
        ours.model.pos_resize = "torchgeo"
    assert float((out.pooled - exp_pooled).abs().max()) <= TOL
    assert float((out.grid - exp_grid).abs().max()) <= TOL
    assert float((out.pooled - torchgeo_pooled).abs().max()) > 1e-3  # the two resizes do differ


def test_channel_embedding_matches_torchgeos(models):
    """Optical codes of floored wavelengths and the 12 SAR rows, one call each."""
    ref, ours, _ = models
    ids = torch.tensor([[442.92, 490.0, 842.0, 1613.86, 2190.0, -1, -2, -3, -4, -5, -8, -9, -12]])
    exp = ref.model.patch_embed.chnfus.chnemb(ids.clone())[0]
    assert torch.allclose(ours.model.patch_embed.chnfus.chnemb(ids[0]), exp, atol=1e-6, rtol=0)


def test_channel_ids_steer_the_embedding(models):
    """Same pixels, Landsat's wavelengths vs Sentinel-2's for the same colours: other embeddings; and the
    ids are per position: swapping two bands' ids changes the output too."""
    _, ours, _ = models
    x = torch.randn(1, 1, 4, 112, 112, generator=torch.Generator().manual_seed(6))
    s2 = SensorSpec(rp.S2_COLLECTION, ("B4", "B3", "B2", "B8"), 10)
    swapped = SensorSpec(rp.S2_COLLECTION, ("B3", "B4", "B2", "B8"), 10)
    with torch.inference_mode():
        a = ours.forward(x, _ctx(L8)).pooled
        b = ours.forward(x, _ctx(s2)).pooled
        c = ours.forward(x, _ctx(swapped)).pooled
    assert float((a - b).abs().max()) > 1e-3 and float((b - c).abs().max()) > 1e-3


def test_single_equals_batch(models):
    _, ours, _ = models
    x = torch.randn(2, 1, 2, 112, 112, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        batch = ours.forward(x, _ctx(S1))
        one = ours.forward(x[1:], _ctx(S1))
    assert float((one.pooled[0] - batch.pooled[1]).abs().max()) <= TOL
    assert float((one.grid[0] - batch.grid[1]).abs().max()) <= TOL


def test_channel_ids_come_from_the_band_table():
    assert rp.channel_ids(S2, ("B2", "B8", "B12")) == (490.0, 842.0, 2190.0)
    assert rp.channel_ids(S1, ("VV", "VH")) == (-1.0, -2.0)
    assert rp.channel_ids(*MIXED) == (-2.0, 665.0, 842.0, -1.0, 1610.0)
    assert rp.channel_ids(L8, ("SR_B5",)) == (865.0,)


def test_bad_inputs_are_refused_before_compute(models):
    _, ours, _ = models
    with pytest.raises(SpecError, match="one frame"):
        ours.forward(torch.zeros(1, 2, 2, 224, 224), _ctx(S1))
    with pytest.raises(SpecError, match="multiples of 14"):
        ours.forward(torch.zeros(1, 1, 2, 100, 100), _ctx(S1))
    with pytest.raises(SpecError, match="13 channels but 2 band names"):
        ours.forward(torch.zeros(1, 1, 13, 224, 224), _ctx(S1))
    angle = SensorSpec("COPERNICUS/S1_GRD", ("VV", "angle"), 10)
    with pytest.raises(SpecError, match="'angle'.*is not one"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), _ctx(angle))
    qa = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "SCL"), 10)
    with pytest.raises(SpecError, match="SCL.*no centre wavelength"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), _ctx(qa))
    own = SensorSpec("users/me/drone", ("red", "nir"), 1)
    with pytest.raises(SpecError, match="users/me/drone.*band table"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), _ctx(own))
    with pytest.raises(UnknownBandError, match="B99"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), _ctx(S2, ("B4", "B99")))
