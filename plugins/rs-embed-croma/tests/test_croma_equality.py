"""Our CROMA network equals torchgeo 0.8.1's on one shared random state dict (full-size base, fp32).

The state dict is written in the released file's layout (one state dict per part: s1_encoder,
s1_GAP_FFN, s2_encoder, s2_GAP_FFN, joint_encoder) into an offline Hub cache and loaded by the
plugin's own `load()` (weights_only, strict): the production weights path at full size. All three
modes go through the embedder's forward with a BatchContext built here, as the runner builds it.
"""

from __future__ import annotations

import attrs
import pytest
import torch

croma_ref = pytest.importorskip("torchgeo.models.croma")

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.specs import SensorSpec  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_croma as rc  # noqa: E402
import rs_embed_croma_model as rcm  # noqa: E402

TOL = 1e-5
REVISION = "5" * 40
S2 = SensorSpec(rc.OPTICAL_COLLECTION, rc.OPTICAL_BANDS, 10)
S1 = SensorSpec(rc.SAR_COLLECTION, rc.SAR_BANDS, 10)


def ctx_for(bands: tuple[str, ...], sensor, want: str = "grid") -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=sensor,  # type: ignore[arg-type]
                        want=want, band_names=bands)


OPTICAL = ctx_for(rc.OPTICAL_BANDS, S2)
SAR = ctx_for(rc.SAR_BANDS, S1)
JOINT = ctx_for(rc.OPTICAL_BANDS + rc.SAR_BANDS, (S2, S1))


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Default init leaves LayerNorm gains at 1 and biases at 0: randomise every LayerNorm and bias
    so a swapped or skipped norm/bias shows up in the comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.copy_(1.0 + 0.1 * torch.randn(mod.weight.shape, generator=g))
            bias = getattr(mod, "bias", None)
            if isinstance(bias, torch.nn.Parameter):
                bias.copy_(0.1 * torch.randn(bias.shape, generator=g))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 1, 14, 120, 120, generator=g)  # CROMA's inputs are in [0, 1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, batch):
    """(torchgeo's outputs on `batch`, our embedder loaded from an offline Hub cache), one shared state dict.

    The reference is run first and freed before ours loads: one full-size model in memory at a time.
    """
    root = tmp_path_factory.mktemp("croma")
    torch.manual_seed(0)
    ref = croma_ref.croma_base(modalities=["sar", "optical"]).eval()
    _perturb(ref)
    ckpt = root / rc.BASE.weights.filename
    torch.save({part: getattr(ref, part).state_dict() for part in rcm.PARTS}, ckpt)  # the released layout
    with torch.inference_mode():
        expected = {k: v.clone() for k, v in ref(x_sar=batch[:, 0, 12:], x_optical=batch[:, 0, :12]).items()}
    del ref
    spec = weights_spec_for(rc.REPO_ID, REVISION, ckpt.name, ckpt)
    build_hf_cache(root / "hub", rc.REPO_ID, REVISION, {ckpt.name: ckpt})
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = rc.CROMA(attrs.evolve(rc.BASE, weights=spec), "cpu")
            ours.load()
    finally:
        mp.undo()
    ckpt.unlink()
    return expected, ours


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    b, n, d = tokens.shape
    return tokens.transpose(1, 2).reshape(b, d, 15, 15)


def _check(out, pooled: torch.Tensor, tokens: torch.Tensor) -> None:
    assert out.pooled.shape == (2, 768) and out.grid.shape == (2, 768, 15, 15)
    assert float((out.pooled - pooled).abs().max()) <= TOL
    assert float((out.grid - _grid(tokens)).abs().max()) <= TOL
    assert float(pooled.std()) > 0.1 and float(tokens.std()) > 0.1  # not a degenerate comparison


def test_optical_mode_equals_torchgeo(models, batch):
    reference, ours = models
    with torch.inference_mode():
        out = ours.forward(batch[:, :, :12], OPTICAL)
    _check(out, reference["optical_GAP"], reference["optical_encodings"])


def test_sar_mode_equals_torchgeo(models, batch):
    reference, ours = models
    with torch.inference_mode():
        out = ours.forward(batch[:, :, 12:], SAR)
    _check(out, reference["sar_GAP"], reference["sar_encodings"])


def test_joint_mode_equals_torchgeo(models, batch):
    """Optical then VV, VH in one input (what a multi-sensor request delivers): the joint encoder."""
    reference, ours = models
    with torch.inference_mode():
        out = ours.forward(batch, JOINT)
    _check(out, reference["joint_GAP"], reference["joint_encodings"])
    # the joint embedding is neither unimodal one
    assert float((out.pooled - reference["optical_GAP"]).abs().max()) > 0.1


def test_single_equals_batch(models, batch):
    _, ours = models
    with torch.inference_mode():
        both = ours.forward(batch, JOINT)
        one = ours.forward(batch[1:], JOINT)
    assert float((one.pooled[0] - both.pooled[1]).abs().max()) <= TOL
    assert float((one.grid[0] - both.grid[1]).abs().max()) <= TOL


def test_alibi_equals_torchgeos():
    assert torch.allclose(rcm.alibi(16, 15, 15, torch.device("cpu")), croma_ref.get_2dalibi(16, 225), atol=1e-6, rtol=0)
    assert torch.allclose(rcm.alibi(4, 6, 6, torch.device("cpu")), croma_ref.get_2dalibi(4, 36), atol=1e-6, rtol=0)


def test_other_sizes_use_alibi_for_their_grid(models):
    """A 96 px input equals torchgeo's CROMA built for 96 px (its bias is fixed at construction)."""
    _, ours = models
    ref96 = croma_ref.croma_base(modalities=["optical"], image_size=96).eval()
    ref96.s2_encoder.load_state_dict(ours.model.s2_encoder.state_dict())  # same key names
    ref96.s2_GAP_FFN.load_state_dict(ours.model.s2_GAP_FFN.state_dict())
    x = torch.rand(1, 1, 12, 96, 96, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        exp = ref96(x_optical=x[:, 0])
        out = ours.forward(x, OPTICAL)
    assert out.grid.shape == (1, 768, 12, 12)
    assert float((out.pooled - exp["optical_GAP"]).abs().max()) <= TOL


def test_pooled_request_skips_the_grid(models):
    _, ours = models
    with torch.inference_mode():
        out = ours.forward(torch.zeros(1, 1, 2, 120, 120), ctx_for(rc.SAR_BANDS, S1, "pooled"))
    assert out.grid is None and out.pooled.shape == (1, 768)


def test_bad_inputs_are_refused_before_compute(models):
    _, ours = models
    with pytest.raises(SpecError, match="one frame"):
        ours.forward(torch.zeros(1, 2, 12, 120, 120), OPTICAL)
    with pytest.raises(SpecError, match="12 channels but 2 band names"):
        ours.forward(torch.zeros(1, 1, 12, 120, 120), SAR)
    swapped = ctx_for(("VH", "VV"), S1)
    with pytest.raises(SpecError, match="in that order"):
        ours.forward(torch.zeros(1, 1, 2, 120, 120), swapped)
    with pytest.raises(SpecError, match="multiples of 8"):
        ours.forward(torch.zeros(1, 1, 2, 100, 100), SAR)


def test_large_has_the_released_layout():
    """Structure only (a full ViT-L forward is too slow for CI): both built on the meta device."""
    with torch.device("meta"):
        ref = croma_ref.croma_large(modalities=["sar", "optical"], image_size=8)  # 1 patch: a cheap bias buffer
        ours = rcm.CROMA(rc.LARGE.params)
    expected = {f"{part}.{k}": tuple(v.shape) for part in rcm.PARTS for k, v in getattr(ref, part).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert rc.LARGE.pooled_dim == rc.LARGE.grid_dim == 1024
