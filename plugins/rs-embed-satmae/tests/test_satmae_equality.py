"""SatMAE / SatMAE++ encoder == timm vit_large_patch16_224 (global_pool="", no head) on one shared random state dict.

The full-size check goes through the real loading path once (SatMAE and SatMAE++ share the
architecture): a random ViT-L training checkpoint shaped like the authors' SatMAE++ file ({"model":
encoder + MAE decoder + multi-scale head, "args": argparse.Namespace}) is served from an offline Hub
cache under the pinned repo/filename, loaded by the plugin (weights_only, decoder dropped by name,
strict), and its outputs are compared with timm's on the very same tensors.
"""

from __future__ import annotations

import argparse
import gc

import attrs
import pytest
import torch

from rs_embed_core.testing import build_hf_cache, offline_hub, weights_spec_for
from rs_embed_core.weights import CACHE_ENV

import rs_embed_satmae as rs
import rs_embed_satmae_model as rsm

timm = pytest.importorskip("timm")

TOL = 1e-5


def _timm_vit(params: dict, device: str = "cpu") -> torch.nn.Module:
    """timm's VisionTransformer as vit_large_patch16_224 builds it (LayerNorm eps 1e-6), trunk only."""
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    with torch.device(device):
        return VisionTransformer(
            img_size=params["image_size"], patch_size=params["patch_size"], embed_dim=params["embed_dim"],
            depth=params["depth"], num_heads=params["heads"], mlp_ratio=params["mlp_ratio"], qkv_bias=True,
            num_classes=0, global_pool="", norm_layer=partial(torch.nn.LayerNorm, eps=params["norm_eps"]),
        ).eval()


def _random_encoder(params: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in rsm.build_net(params).state_dict().items() if params["depth"] < 4 else _meta_items(params):
        t = torch.randn(v.shape, generator=g) * 0.02
        out[k] = t + 1.0 if k.endswith("weight") and ("norm" in k) else t
    return out


def _meta_items(params: dict):
    with torch.device("meta"):
        return list(rsm.build_net(params).state_dict().items())


def _compare(net: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        pooled, grid = rsm.embed(net, x)
        tokens = ref.forward_features(x)
    patches = tokens[:, 1:]
    d = patches.shape[-1]
    ref_grid = patches.transpose(1, 2).reshape(x.shape[0], d, 14, 14)
    return (pooled - patches.mean(1)).abs().max().item(), (grid - ref_grid).abs().max().item()


def test_tiny_config_equals_timm_and_keys_match():
    params = {**rs.VIT_LARGE, "embed_dim": 64, "depth": 2, "heads": 4}
    sd = _random_encoder(params, seed=0)
    net, ref = rsm.build_net(params).eval(), _timm_vit(params)
    assert set(net.state_dict()) == set(ref.state_dict())
    net.load_state_dict(sd, strict=True)
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    dp, dg = _compare(net, ref, x)
    assert dp <= TOL and dg <= TOL
    # the eps is part of the contract: timm with torch's default 1e-5 (what MAE wrappers end up with) differs
    wrong = _timm_vit({**params, "norm_eps": 1e-5})
    wrong.load_state_dict(sd, strict=True)
    assert max(_compare(net, wrong, x * 1e-3)) > TOL


def test_full_size_checkpoint_loads_strictly_offline_and_equals_timm(tmp_path, monkeypatch):
    """ViT-L/16 at full size, once: pinned-file path (pickle with Namespace, nested model, decoder) + equality."""
    params = rs.VIT_LARGE
    sd = _random_encoder(params, seed=2)
    extra = {  # the decoder and SatMAE++ head keys the real file holds next to the encoder (small shapes suffice)
        "mask_token": torch.zeros(1, 1, 512), "decoder_embed.weight": torch.zeros(512, 1024),
        "decoder_pos_embed": torch.zeros(1, 197, 512), "decoder_blocks.0.norm1.weight": torch.ones(512),
        "decoder_norm.weight": torch.ones(512), "decoder_pred.weight": torch.zeros(768, 512),
        "proj_up_conv.weight": torch.zeros(12, 3, 1, 1), "proj_up_norm.weight": torch.ones(12),
        "up_block.up_conv.weight": torch.zeros(12, 12, 4, 4),
    }
    path = tmp_path / rs.SATMAEPP_WEIGHTS.filename
    torch.save({"model": {**sd, **extra}, "epoch": 799, "args": argparse.Namespace(model="mae_vit_large_patch16")}, path)
    del sd, extra
    gc.collect()
    rev = "5" * 40
    build_hf_cache(tmp_path / "hub", rs.SATMAEPP_WEIGHTS.repo_id, rev, {path.name: path})
    spec = weights_spec_for(rs.SATMAEPP_WEIGHTS.repo_id, rev, path.name, path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    emb = rs.SatMAEPP(attrs.evolve(rs.SatMAEPP.card.variant(), weights=spec), "cpu")
    with offline_hub(tmp_path / "hub"):
        emb.load()
    path.unlink()  # the converted safetensors now backs the parameters
    net = emb.net
    with torch.device("meta"):
        ref = _timm_vit(params, "meta")
    ref.load_state_dict(net.state_dict(), strict=True, assign=True)  # the very same tensors, no copy
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    dp, dg = _compare(net, ref.eval(), x)
    assert dp <= TOL and dg <= TOL, (dp, dg)
