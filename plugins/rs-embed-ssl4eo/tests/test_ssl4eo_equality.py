"""SSL4EO encoders == timm / torchgeo 0.8.1 on one shared random state dict (fp32, <= 1e-5, pooled and grid).

torchgeo builds these encoders with timm (`vit_{small,base,large}_patch16_224`, 13 input channels); its
pooled output (num_classes=0) is the class token after the final LayerNorm, the grid the patch tokens of
`forward_features`. MoCo v3's ViT-S has 12 heads, which torchgeo's builder does not set: that variant is
compared with timm's ViT-S built with 12 heads. The default variant goes once, at full size, through the
real loading path (offline Hub cache under the pinned repo/filename, .pth, strict).
"""

from __future__ import annotations

import gc

import attrs
import pytest
import torch

from rs_embed_core.testing import build_hf_cache, offline_hub, random_state, weights_spec_for
from rs_embed_core.weights import CACHE_ENV

import rs_embed_ssl4eo as rs4
import rs_embed_ssl4eo_model as rs4m

timm = pytest.importorskip("timm")
tg_vit = pytest.importorskip("torchgeo.models.vit")

TOL = 1e-5
TIMM_NAMES = {384: "vit_small_patch16_224", 768: "vit_base_patch16_224", 1024: "vit_large_patch16_224"}
TORCHGEO_BUILDERS = {384: tg_vit.vit_small_patch16_224, 768: tg_vit.vit_base_patch16_224,
                     1024: tg_vit.vit_large_patch16_224}


def _timm(params: dict, device: str = "cpu", **override) -> torch.nn.Module:
    with torch.device(device):
        return timm.create_model(TIMM_NAMES.get(params["embed_dim"], "vit_small_patch16_224"), pretrained=False,
                                 in_chans=13, num_classes=0, embed_dim=params["embed_dim"], depth=params["depth"],
                                 num_heads=params["heads"], **override).eval()


def _compare(net, ref, x: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        pooled, grid = rs4m.embed(net, x)
        ref_pooled = ref(x)
        tokens = ref.forward_features(x)
    b, _, d = tokens.shape
    ref_grid = tokens[:, 1:].transpose(1, 2).reshape(b, d, 14, 14)
    return (pooled - ref_pooled).abs().max().item(), (grid - ref_grid).abs().max().item()


@pytest.mark.parametrize("name", [v.name for v in rs4.VARIANTS])
def test_tiny_config_of_each_variant_equals_timm(name):
    """Each variant's configuration (head count included) at a tiny width/depth, against timm."""
    params = rs4.SSL4EO.card.variant(name).params
    dim = 8 * params["heads"]  # divisible by the variant's head count
    tiny = {**params, "embed_dim": dim, "depth": 2}
    ref = _timm(tiny)
    sd = random_state({k: v.shape for k, v in ref.state_dict().items()}, seed=0)
    ref.load_state_dict(sd, strict=True)
    net = rs4m.build_net(tiny).eval()
    net.load_state_dict(sd, strict=True)
    x = torch.rand(2, 13, 224, 224, generator=torch.Generator().manual_seed(1))
    dp, dg = _compare(net, ref, x)
    assert dp <= TOL and dg <= TOL, (name, dp, dg)


@pytest.mark.parametrize("name", ["vit_small_dino", "vit_small_mae", "vit_base_mae", "vit_large_mae"])
def test_variants_match_torchgeos_builders_key_for_key_and_head_count(name):
    var = rs4.SSL4EO.card.variant(name)
    with torch.device("meta"):
        ref = TORCHGEO_BUILDERS[var.params["embed_dim"]](None, in_chans=13, num_classes=0)
        net = rs4m.build_net(var.params)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ref.blocks[0].attn.num_heads == var.params["heads"] and len(ref.blocks) == var.params["depth"]


def test_dino_vit_small_full_size_equals_torchgeo():
    var = rs4.SSL4EO.card.variant("vit_small_dino")
    ref = tg_vit.vit_small_patch16_224(None, in_chans=13, num_classes=0).eval()
    sd = random_state({k: v.shape for k, v in ref.state_dict().items()}, seed=4)
    ref.load_state_dict(sd, strict=True)
    net = rs4m.build_net(var.params).eval()
    net.load_state_dict(sd, strict=True)
    x = torch.rand(1, 13, 224, 224, generator=torch.Generator().manual_seed(5))
    dp, dg = _compare(net, ref, x)
    assert dp <= TOL and dg <= TOL, (dp, dg)


def test_moco_head_count_matters_and_torchgeos_builder_has_six():
    """The MoCo file in torchgeo's 6-head ViT-S computes something else than the 12-head model it was trained as."""
    with torch.device("meta"):
        assert tg_vit.vit_small_patch16_224(None, in_chans=13).blocks[0].attn.num_heads == 6
    params = {**rs4.SSL4EO.card.variant("vit_small_moco").params, "depth": 2}
    twelve = rs4m.build_net(params).eval()
    six = rs4m.build_net({**params, "heads": 6}).eval()
    sd = random_state({k: v.shape for k, v in twelve.state_dict().items()}, seed=6)
    twelve.load_state_dict(sd)
    six.load_state_dict(sd)
    x = torch.rand(1, 13, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        assert (rs4m.embed(twelve, x)[0] - rs4m.embed(six, x)[0]).abs().max() > 1e-3


def test_default_variant_full_size_loads_strictly_offline_and_equals_timm(tmp_path, monkeypatch):
    """ViT-S/16 MoCo (12 heads) at full size: the pinned-file path (.pth, strict) + equality with timm."""
    var = rs4.SSL4EO.card.variant()
    assert var.name == "vit_small_moco"
    ref = _timm(var.params)
    keys = {k: v.shape for k, v in ref.state_dict().items()}
    path = tmp_path / var.weights.filename
    torch.save(random_state(keys, seed=2), path)
    gc.collect()
    rev = "5" * 40
    build_hf_cache(tmp_path / "hub", var.weights.repo_id, rev, {path.name: path})
    spec = weights_spec_for(var.weights.repo_id, rev, path.name, path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    emb = rs4.SSL4EO(attrs.evolve(var, weights=spec), "cpu")
    with offline_hub(tmp_path / "hub"):
        emb.load()
    path.unlink()
    ref.load_state_dict(emb.net.state_dict(), strict=True)
    x = torch.rand(2, 13, 224, 224, generator=torch.Generator().manual_seed(3))
    dp, dg = _compare(emb.net, ref, x)
    assert dp <= TOL and dg <= TOL, (dp, dg)
