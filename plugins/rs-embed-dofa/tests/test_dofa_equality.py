"""Our DOFA network equals torchgeo 0.8.1's on one shared random state dict (full-size base, fp32).

The state dict has exactly the keys of torchgeo's released files (the encoder without fc_norm/head),
is written as a .pth into an offline Hub cache and loaded by the plugin's own `load()` (strictly,
converted once to safetensors): the production weights path at full size.
"""

from __future__ import annotations

import attrs
import pytest
import torch

dofa_ref = pytest.importorskip("torchgeo.models.dofa")

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.errors import SpecError, UnknownBandError  # noqa: E402
from rs_embed_core.specs import SensorSpec  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, perturbed_state_dict, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_dofa as rd  # noqa: E402
import rs_embed_dofa_model as rdm  # noqa: E402

TOL = 1e-5
REVISION = "7" * 40
S2 = SensorSpec("COPERNICUS/S2_HARMONIZED", rd.S2_BANDS, 10)
L8 = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B3", "SR_B2", "SR_B5", "SR_B6", "SR_B7"), 30)
S1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)


def _ctx(sensor: SensorSpec, want: str = "grid") -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=sensor,  # type: ignore[arg-type]
                        want=want, band_names=sensor.bands)


def _random_state_dict(reference: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchgeo's file keys (no fc_norm/head) with values that make every part matter: the kit's perturbed
    biases and gains, and a generated kernel that dominates the (small) position table."""
    def dofa(k: str, v: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
        if k == "pos_embed":
            return 0.02 * torch.randn(v.shape, generator=g)
        if k.endswith(("weight_tokens", "bias_token", "cls_token")):
            return torch.randn(v.shape, generator=g)
        if k.endswith("fc_weight.weight"):
            return 0.3 * torch.randn(v.shape, generator=g)
        return None

    sd = perturbed_state_dict(reference, seed, override=dofa)
    return {k: v for k, v in sd.items() if not k.startswith(("fc_norm.", "head."))}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(torchgeo reference, our embedder loaded from an offline Hub cache) sharing one random state dict."""
    root = tmp_path_factory.mktemp("dofa")
    torch.manual_seed(0)
    ref = dofa_ref.dofa_base_patch16_224().eval()
    sd = _random_state_dict(ref)
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"} and not unexpected

    ckpt = root / rd.BASE.weights.filename
    torch.save(sd, ckpt)
    spec = weights_spec_for(rd.REPO_ID, REVISION, ckpt.name, ckpt)
    build_hf_cache(root / "hub", rd.REPO_ID, REVISION, {ckpt.name: ckpt})
    ckpt.unlink()
    del sd
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = rd.DOFA(attrs.evolve(rd.BASE, weights=spec), "cpu")
            ours.load()
    finally:
        mp.undo()
    return ref, ours


def _reference(ref: torch.nn.Module, x: torch.Tensor, waves: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """torchgeo's pooled feature and its patch tokens after the last block (via a forward hook)."""
    seen = {}
    hook = ref.blocks[-1].register_forward_hook(lambda mod, inp, out: seen.__setitem__("tokens", out))
    try:
        with torch.inference_mode():
            pooled = ref.forward_features(x, waves)
    finally:
        hook.remove()
    b, n, d = seen["tokens"].shape
    side = int(round((n - 1) ** 0.5))
    return pooled, seen["tokens"][:, 1:].transpose(1, 2).reshape(b, d, side, side)


@pytest.mark.parametrize("sensor", [S2, L8, S1], ids=["sentinel2", "landsat8", "sentinel1"])
def test_pooled_and_grid_equal_torchgeo(models, sensor):
    ref, ours = models
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, len(sensor.bands), 224, 224, generator=g)
    waves = list(rd.wavelengths_um(sensor.collection, sensor.bands))
    exp_pooled, exp_grid = _reference(ref, x[:, 0], waves)
    with torch.inference_mode():
        out = ours.forward(x, _ctx(sensor))
    assert out.pooled.shape == (2, 768) and out.grid.shape == (2, 768, 14, 14)
    assert float((out.pooled - exp_pooled).abs().max()) <= TOL
    assert float((out.grid - exp_grid).abs().max()) <= TOL
    assert float(exp_grid.std()) > 0.5 and float(exp_pooled.std()) > 0.5  # not a degenerate comparison


def test_multi_sensor_batch_mixes_collections(models):
    """Sentinel-2 and Sentinel-1 bands merged in one input: each band gets its own collection's value."""
    ref, ours = models
    s2 = SensorSpec(S2.collection, ("B4", "B3", "B2", "B8"), 10)
    ctx = BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=(s2, S1),  # type: ignore[arg-type]
                       want="grid", band_names=("B4", "VV", "B3", "B2", "VH", "B8"))
    assert rd.batch_wavelengths(ctx.sensor, ctx.band_names) == (0.665, 5.405, 0.56, 0.49, 5.405, 0.842)
    x = torch.randn(1, 1, 6, 224, 224, generator=torch.Generator().manual_seed(6))
    exp_pooled, exp_grid = _reference(ref, x[:, 0], [0.665, 5.405, 0.56, 0.49, 5.405, 0.842])
    with torch.inference_mode():
        out = ours.forward(x, ctx)
    assert float((out.pooled - exp_pooled).abs().max()) <= TOL
    assert float((out.grid - exp_grid).abs().max()) <= TOL


def test_wavelengths_steer_the_embedding(models):
    """The generated kernel matters in this comparison: other wavelengths, other outputs."""
    _, ours = models
    x = torch.randn(1, 1, 9, 224, 224, generator=torch.Generator().manual_seed(4))
    shifted = attrs.evolve(S2, bands=("B3", "B2", "B4", "B5", "B6", "B7", "B8", "B11", "B12"))
    with torch.inference_mode():
        a = ours.forward(x, _ctx(S2, "pooled")).pooled
        b = ours.forward(x, _ctx(shifted, "pooled")).pooled
    assert float((a - b).abs().max()) > 0.5


def test_wavelengths_are_the_authors_values():
    """S2 as in DOFA's README (um, bands r,g,b,b05..b12); Sentinel-1 as 5.405 (its README's S1 value)."""
    assert rd.wavelengths_um(S2.collection, S2.bands) == (0.665, 0.56, 0.49, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19)
    assert rd.wavelengths_um(S1.collection, S1.bands) == (5.405, 5.405)
    assert rd.wavelengths_um(L8.collection, ("SR_B5",)) == (0.865,)


def test_wavelength_code_equals_torchgeos():
    wl = torch.tensor([0.443, 0.665, 0.842, 1.61, 2.19, 5.405, 10.895])
    assert torch.equal(rdm.wavelength_code(wl), dofa_ref.position_embedding(128, wl * 1000))


def test_single_equals_batch(models):
    _, ours = models
    x = torch.randn(3, 1, 9, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        batch = ours.forward(x, _ctx(S2))
        for i in range(3):
            one = ours.forward(x[i : i + 1], _ctx(S2))
            assert float((one.pooled[0] - batch.pooled[i]).abs().max()) <= TOL
            assert float((one.grid[0] - batch.grid[i]).abs().max()) <= TOL


def test_pooled_request_skips_the_grid(models):
    _, ours = models
    with torch.inference_mode():
        out = ours.forward(torch.zeros(1, 1, 9, 224, 224), _ctx(S2, "pooled"))
    assert out.grid is None and out.pooled.shape == (1, 768)


def test_bad_inputs_are_refused_before_compute(models):
    _, ours = models
    with pytest.raises(SpecError, match="one frame"):
        ours.forward(torch.zeros(1, 2, 9, 224, 224), _ctx(S2))
    with pytest.raises(SpecError, match="224"):
        ours.forward(torch.zeros(1, 1, 9, 256, 256), _ctx(S2))
    with pytest.raises(SpecError, match="9 channels but 2 band names"):
        ours.forward(torch.zeros(1, 1, 9, 224, 224), _ctx(S1))
    qa = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "QA_PIXEL"), 30)
    with pytest.raises(SpecError, match="QA_PIXEL.*no centre wavelength"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), _ctx(qa))
    own = SensorSpec("users/me/my_drone", ("red", "nir"), 1)
    with pytest.raises(SpecError, match="users/me/my_drone.*band table"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), _ctx(own))
    odd = BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=S2,  # type: ignore[arg-type]
                       want="grid", band_names=("B4", "B99"))
    with pytest.raises(UnknownBandError, match="B99"):
        ours.forward(torch.zeros(1, 1, 2, 224, 224), odd)


def test_large_has_torchgeos_keys_and_shapes():
    """Structure only (a full ViT-L forward is too slow for CI): both built on the meta device."""
    with torch.device("meta"):
        ref = dofa_ref.dofa_large_patch16_224()
        ours = rdm.DOFA(rd.LARGE.params)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.startswith(("fc_norm.", "head."))}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert rd.LARGE.grid_dim == rd.LARGE.pooled_dim == expected["cls_token"][-1]
