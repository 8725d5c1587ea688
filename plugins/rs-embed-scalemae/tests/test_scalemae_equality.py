"""Scale-MAE encoder == torchgeo 0.8.1 ScaleMAE / scalemae_large_patch16 on one shared random state dict.

The full-size check goes through the real loading path once: a random ViT-L state dict with the keys
torchgeo's file holds (timm names incl. the unused fixed `pos_embed`) is served from an offline Hub
cache under the pinned repo/filename, loaded strictly by the plugin, and compared with torchgeo's
model on the very same tensors for several GSD ratios.
"""

from __future__ import annotations

import gc
from functools import partial

import attrs
import pytest
import torch

from rs_embed_core.testing import build_hf_cache, offline_hub, random_state, weights_spec_for
from rs_embed_core.weights import CACHE_ENV

import rs_embed_scalemae as rsc
import rs_embed_scalemae_model as rscm

scale_mae = pytest.importorskip("torchgeo.models.scale_mae")

TOL = 1e-5


def _torchgeo(params: dict, res: float, device: str = "cpu") -> torch.nn.Module:
    with torch.device(device):
        if params == rsc.VIT_LARGE:  # the named reference builder at full size
            return scale_mae.scalemae_large_patch16(None, res=res, num_classes=0, global_pool="").eval()
        return scale_mae.ScaleMAE(
            res=res, img_size=params["image_size"], patch_size=params["patch_size"], embed_dim=params["embed_dim"],
            depth=params["depth"], num_heads=params["heads"], mlp_ratio=params["mlp_ratio"], qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=params["norm_eps"]), num_classes=0, global_pool="",
        ).eval()


def _compare(net, ref, x: torch.Tensor, res: float) -> tuple[float, float]:
    with torch.inference_mode():
        pooled, grid = rscm.embed(net, x, torch.full((x.shape[0],), res))
        tokens = ref.forward_features(x)
    d = tokens.shape[-1]
    ref_grid = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], d, 14, 14)
    return (pooled - tokens[:, 0]).abs().max().item(), (grid - ref_grid).abs().max().item()


def test_position_table_equals_torchgeo_bit_for_bit():
    for res in (0.3, 1.0, 2.5, 10.0, 30.0):
        ours = rscm.gsd_pos_embed(1024, 14, torch.tensor([res]))
        ref = scale_mae.get_2d_sincos_pos_embed_with_resolution(1024, 14, torch.tensor([res]), cls_token=True)
        assert torch.equal(ours, ref), res


def test_tiny_config_equals_torchgeo_per_gsd_and_per_item():
    params = {**rsc.VIT_LARGE, "embed_dim": 64, "depth": 2, "heads": 4}
    ref = _torchgeo(params, 1.0)
    sd = random_state({k: v.shape for k, v in ref.state_dict().items()}, seed=0)
    net = rscm.build_net(params).eval()
    net.load_state_dict({k: v for k, v in sd.items() if k not in rscm.DROP}, strict=True)
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    outs = {}
    for res in (0.5, 10.0):
        ref.res = res
        dp, dg = _compare(net, ref, x, res)
        assert dp <= TOL and dg <= TOL, (res, dp, dg)
        with torch.inference_mode():
            outs[res] = rscm.embed(net, x, torch.full((2,), res))[0]
    assert (outs[0.5] - outs[10.0]).abs().max() > 1e-3  # the GSD really changes the embedding
    with torch.inference_mode():  # one batch with a GSD per item == each item at its own GSD
        mixed = rscm.embed(net, x, torch.tensor([0.5, 10.0]))[0]
    assert torch.allclose(mixed[0], outs[0.5][0], atol=1e-6) and torch.allclose(mixed[1], outs[10.0][1], atol=1e-6)


def test_full_size_file_loads_strictly_offline_and_equals_torchgeo(tmp_path, monkeypatch):
    """ViT-L/16 at full size, once: the pinned-file path (.pth, strict, pos_embed dropped) + equality."""
    with torch.device("meta"):
        keys = {k: v.shape for k, v in _torchgeo(rsc.VIT_LARGE, 1.0, "meta").state_dict().items()}
    assert "pos_embed" in keys and not any(k.startswith("head") for k in keys)
    path = tmp_path / rsc.WEIGHTS.filename
    torch.save(random_state(keys, seed=2), path)
    gc.collect()
    rev = "7" * 40
    build_hf_cache(tmp_path / "hub", rsc.REPO_ID, rev, {path.name: path})
    spec = weights_spec_for(rsc.REPO_ID, rev, path.name, path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    emb = rsc.ScaleMAE(attrs.evolve(rsc.ScaleMAE.card.variant(), weights=spec), "cpu")
    with offline_hub(tmp_path / "hub"):
        emb.load()
    path.unlink()
    net = emb.net
    with torch.device("meta"):
        ref = _torchgeo(rsc.VIT_LARGE, 1.0, "meta")
    shared = dict(net.state_dict())
    shared["pos_embed"] = torch.zeros(keys["pos_embed"])  # unused by ScaleMAE's forward, dropped by the plugin
    ref.load_state_dict(shared, strict=True, assign=True)
    ref.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    for res in (10.0, 0.6):
        ref.res = res
        dp, dg = _compare(net, ref, x, res)
        assert dp <= TOL and dg <= TOL, (res, dp, dg)
