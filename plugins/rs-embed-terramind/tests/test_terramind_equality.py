"""Our TerraMind S2 L2A encoder equals terratorch 1.2.11's TerraMindViT on one shared random state dict (fp32).

The state dict, with other modalities' embeddings and decoder entries added as the published
checkpoints carry them, is written into an offline Hub cache and loaded by the plugin's own
`load()` at full size (small), so the filtering and strict loading are the production path.
"""

from __future__ import annotations

import attrs
import pytest
import torch

pytest.importorskip("terratorch")
from terratorch.registry import BACKBONE_REGISTRY  # noqa: E402

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.errors import SpecError, WeightsError  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, perturbed_state_dict, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_terramind as rt  # noqa: E402
import rs_embed_terramind_model as rtm  # noqa: E402

TOL = 1e-5
REPO = "ibm-esa-geospatial/TerraMind-1.0-small"


def _ctx(want: str) -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=None, want=want)  # type: ignore[arg-type]


def _random_state_dict(reference: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The kit's perturbed init plus the modality embedding; buffers (the fixed sin-cos table, the
    bias-free norms' zero biases) kept as they are."""
    buffers = {k for k, _ in reference.named_buffers()}

    def mod_emb(k: str, v: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
        return 0.02 * torch.randn(v.shape, generator=g) if k.endswith("mod_emb") and k not in buffers else None

    return perturbed_state_dict(reference, seed, keep=buffers.__contains__, override=mod_emb)


def _serve(root, checkpoint: dict[str, torch.Tensor], revision: str):
    path = root / "TerraMind_v1_small.pt"
    torch.save(checkpoint, path)
    spec = weights_spec_for(REPO, revision, path.name, path)
    build_hf_cache(root / "hub", REPO, revision, {path.name: path})
    path.unlink()
    return attrs.evolve(rt.VARIANTS[0], weights=spec)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("terramind")
    torch.manual_seed(0)
    ref = BACKBONE_REGISTRY.build("terramind_v1_small", pretrained=False, modalities=["S2L2A"]).eval()
    sd = _random_state_dict(ref)
    ref.load_state_dict(sd, strict=True)
    checkpoint = dict(sd)
    checkpoint.update({  # parts of the full model this encoder path does not use
        "encoder_embeddings.untok_sen1grd@224.proj.weight": torch.randn(384, 512),
        "encoder_embeddings.untok_sen1grd@224.mod_emb": torch.randn(1, 1, 384),
        "encoder_embeddings.tok_lulc@224.token_emb.weight": torch.randn(8, 384),
        "decoder_embeddings.tok_lulc@224.mod_emb": torch.randn(1, 1, 384),
        "decoder.0.norm1.weight": torch.ones(384),
        "decoder_norm.weight": torch.ones(384),
        "decoder_proj_context.weight": torch.randn(384, 384),
        "mask_token": torch.zeros(1, 1, 384),
    })
    variant = _serve(root, checkpoint, "8" * 40)
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = rt.TerraMind(variant, "cpu")
            ours.load()
    finally:
        mp.undo()
    return ref, ours, checkpoint


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(5)
    return torch.randn(3, 1, 12, 224, 224, generator=g)


def test_tokens_pooled_and_grid_equal_terratorch(models, images):
    ref, ours, _ = models
    with torch.inference_mode():
        expected = ref(images[:, 0])[-1]  # (B, 196, 384): last layer after encoder_norm
        out = ours.forward(images, _ctx("grid"))
        tokens, hw = ours.net(images[:, 0])
    assert hw == (14, 14) and expected.shape == (3, 196, 384)
    assert float((tokens - expected).abs().max()) <= TOL
    assert float((out.pooled - expected.mean(dim=1)).abs().max()) <= TOL
    assert float((out.grid - expected.transpose(1, 2).reshape(3, 384, 14, 14)).abs().max()) <= TOL
    assert float(expected.std()) > 0.1  # not a degenerate comparison


def test_other_input_sizes_follow_terratorchs_position_interpolation(models):
    ref, ours, _ = models
    x = torch.randn(1, 12, 160, 192, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = ref(x)[-1]
        got, hw = ours.net(x)
    assert hw == (10, 12) and float((got - expected).abs().max()) <= TOL


def test_single_equals_batch(models, images):
    _, ours, _ = models
    with torch.inference_mode():
        batch = ours.forward(images, _ctx("grid"))
        for i in range(3):
            one = ours.forward(images[i : i + 1], _ctx("grid"))
            assert float((one.pooled[0] - batch.pooled[i]).abs().max()) <= TOL
            assert float((one.grid[0] - batch.grid[i]).abs().max()) <= TOL


def test_bad_inputs_are_refused(models):
    _, ours, _ = models
    with pytest.raises(SpecError, match="12-band"):
        ours.forward(torch.zeros(1, 2, 12, 224, 224), _ctx("pooled"))
    with pytest.raises(SpecError, match="multiple of the patch size"):
        ours.forward(torch.zeros(1, 1, 12, 100, 100), _ctx("pooled"))


@pytest.mark.parametrize("change,match", [
    ({"encoder.3.attn.extra.weight": torch.zeros(2)}, "encoder.3.attn.extra.weight"),  # unknown encoder key
    ({"encoder.0.norm1.bias": torch.full((384,), 0.5)}, "not zero"),  # a trained norm bias is never dropped
])
def test_load_refuses_checkpoints_that_do_not_fit(models, tmp_path, monkeypatch, change, match):
    _, _, checkpoint = models
    variant = _serve(tmp_path, {**checkpoint, **change}, "9" * 40)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match=match):
        rt.TerraMind(variant).load()


def test_missing_encoder_key_is_refused(models, tmp_path, monkeypatch):
    _, _, checkpoint = models
    variant = _serve(tmp_path, {k: v for k, v in checkpoint.items() if k != "encoder.11.mlp.fc2.weight"}, "a" * 40)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="encoder.11.mlp.fc2.weight"):
        rt.TerraMind(variant).load()


def test_base_has_terratorchs_keys_and_shapes():
    """Structure only (terratorch cannot build on the meta device; base is cheap on CPU without a forward)."""
    ref = BACKBONE_REGISTRY.build("terramind_v1_base", pretrained=False, modalities=["S2L2A"])
    params = rt.TerraMind.card.variant("base").params
    with torch.device("meta"):
        ours = rtm.TerraMindS2(params)
    dropped = set(rtm.drop_names(ref.state_dict(), int(params["depth"])))
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k not in dropped}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert any(k.endswith("mlp.fc3.weight") for k in expected)  # the gated MLP is really there
