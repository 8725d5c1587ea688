"""Clay encoder == claymodel 1.5.0's `Encoder` on one shared random state dict (fp32, <= 1e-5).

The reference runs with mask ratio 0 and no shuffle (every patch token, in grid order); its output
is [class token, patch tokens] after the final norm: pooled is compared with the class token, the
grid with the patch tokens. The full-size check goes through the real loading path once: a
Lightning-style checkpoint with every key of claymodel's ClayMAE large (encoder, decoder, SAM
teacher, projection) under `model.`, served from an offline Hub cache under the pinned repo and
filename, loaded strictly (decoder, teacher and projection dropped by name).
"""

from __future__ import annotations

import gc
import shutil

import attrs
import pytest
import torch

from rs_embed_core.testing import build_hf_cache, offline_hub, random_state, weights_spec_for
from rs_embed_core.weights import CACHE_ENV

import rs_embed_clay as rc
import rs_embed_clay_model as rcm

TOL = 1e-5
TINY = {**rc.LARGE_PARAMS, "embed_dim": 64, "depth": 2, "heads": 4, "dim_head": 16}
S2_WAVES = tuple(rc.S2_L2A.wavelength[b] for b in rc.S2_L2A.bands)
MODIS_WAVES = tuple(rc.MODIS.wavelength[b] for b in rc.MODIS.bands)
S1_WAVES = (3.5, 4.0)


@pytest.fixture(scope="module")
def cm(claymodel):
    return claymodel


def _reference(cm, params: dict) -> torch.nn.Module:
    return cm.Encoder(mask_ratio=0.0, patch_size=params["patch_size"], shuffle=False, dim=params["embed_dim"],
                      depth=params["depth"], heads=params["heads"], dim_head=params["dim_head"],
                      mlp_ratio=params["mlp_ratio"]).eval()


def _pair(cm, params: dict, seed: int = 0) -> tuple[rcm.ClayEncoder, torch.nn.Module]:
    ref = _reference(cm, params)
    sd = random_state({k: v.shape for k, v in ref.state_dict().items()}, seed)
    ref.load_state_dict(sd, strict=True)
    net = rcm.ClayEncoder(params).eval()
    net.load_state_dict(sd, strict=True)
    return net, ref


def _codes(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Realistic metadata: (sin, cos) pairs of random angles for week, hour, lat, lon."""
    angles = torch.rand(b, 4, generator=torch.Generator().manual_seed(seed)) * 6.283
    pairs = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(b, 8)
    return pairs[:, :4], pairs[:, 4:]


def _compare(net, ref, x, waves, gsd: float, time, latlon) -> tuple[float, float]:
    b, d = x.shape[0], net.dim
    with torch.inference_mode():
        cube = {"pixels": x, "time": time, "latlon": latlon, "gsd": torch.tensor(gsd), "waves": torch.tensor(waves)}
        out = ref(cube)[0]
        pooled, grid = net(x, torch.tensor(waves), torch.full((b,), gsd), torch.cat([time, latlon], dim=1))
    h, w = x.shape[-2] // 8, x.shape[-1] // 8
    ref_grid = out[:, 1:].transpose(1, 2).reshape(b, d, h, w)
    return (pooled - out[:, 0]).abs().max().item(), (grid - ref_grid).abs().max().item()


def test_tiny_config_equals_claymodel_with_and_without_metadata(cm):
    net, ref = _pair(cm, TINY)
    x = torch.randn(2, 10, 256, 256, generator=torch.Generator().manual_seed(1))
    time, latlon = _codes(2, 2)
    for t, ll in ((time, latlon), (torch.zeros(2, 4), torch.zeros(2, 4))):
        dp, dg = _compare(net, ref, x, S2_WAVES, 10.0, t, ll)
        assert dp <= TOL and dg <= TOL, (dp, dg)


@pytest.mark.parametrize("waves, gsd", [(MODIS_WAVES, 500.0), (S1_WAVES, 10.0), (S2_WAVES[2:4], 30.0)])
def test_other_sensors_wavelengths_and_gsds_equal_claymodel(cm, waves, gsd):
    net, ref = _pair(cm, TINY, seed=3)
    x = torch.randn(2, len(waves), 64, 64, generator=torch.Generator().manual_seed(4))
    dp, dg = _compare(net, ref, x, waves, gsd, *_codes(2, 5))
    assert dp <= TOL and dg <= TOL, (dp, dg)


def test_each_side_input_changes_the_embedding(cm):
    net, _ = _pair(cm, TINY, seed=6)
    x = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(7))
    waves, meta = torch.tensor(S2_WAVES), torch.cat(_codes(1, 8), dim=1)
    with torch.inference_mode():
        base = net(x, waves, torch.tensor([10.0]), meta)[0]
        changed = [net(x, waves + 0.05, torch.tensor([10.0]), meta)[0], net(x, waves, torch.tensor([30.0]), meta)[0]]
        for k in (0, 4):  # time, then location
            m = meta.clone()
            m[:, k:k + 4] = 0
            changed.append(net(x, waves, torch.tensor([10.0]), m)[0])
    for i, c in enumerate(changed):
        assert (c - base).abs().max() > 1e-4, i


def test_per_item_gsd_equals_each_item_alone_in_claymodel(cm):
    net, ref = _pair(cm, TINY, seed=9)
    x = torch.randn(2, 10, 64, 64, generator=torch.Generator().manual_seed(10))
    time, latlon = _codes(2, 11)
    with torch.inference_mode():
        pooled, _ = net(x, torch.tensor(S2_WAVES), torch.tensor([10.0, 20.0]), torch.cat([time, latlon], dim=1))
        for i, gsd in enumerate((10.0, 20.0)):
            alone = ref({"pixels": x[i:i + 1], "time": time[i:i + 1], "latlon": latlon[i:i + 1],
                         "gsd": torch.tensor(gsd), "waves": torch.tensor(S2_WAVES)})[0][:, 0]
            assert (pooled[i] - alone[0]).abs().max().item() <= TOL, i


def _clay_mae_large_keys(cm, monkeypatch) -> dict[str, torch.Size]:
    """Every key (with shape) of claymodel's ClayMAE large as a Lightning checkpoint names it (`model.*`);
    the SAM teacher is built without downloading its weights."""
    import timm

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw))
    with torch.device("meta"):
        mae = cm.clay_mae_large(mask_ratio=0.75, patch_size=8, norm_pix_loss=False, shuffle=True, metadata={},
                                teacher="samvit_base_patch16.sa1b", dolls=[], doll_weights=[])
    return {f"model.{k}": v.shape for k, v in mae.state_dict().items()}


def test_full_size_checkpoint_loads_strictly_offline_and_equals_claymodel(cm, tmp_path, monkeypatch):
    """ViT-L/8 at full size, once: the pinned-file path (.ckpt, strict, decoder/teacher dropped) + equality."""
    keys = _clay_mae_large_keys(cm, monkeypatch)
    assert {k.split(".")[1] for k in keys} == {"encoder", "decoder", "teacher", "proj"}
    path = tmp_path / "clay-v1.5.ckpt"
    torch.save({"state_dict": random_state(keys, seed=12), "epoch": 1, "global_step": 2}, path)
    gc.collect()
    rev = "7" * 40
    build_hf_cache(tmp_path / "hub", rc.REPO_ID, rev, {rc.WEIGHTS.filename: path})
    spec = weights_spec_for(rc.REPO_ID, rev, rc.WEIGHTS.filename, path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    emb = rc.Clay(attrs.evolve(rc.Clay.card.variant(), weights=spec), "cpu")
    try:
        with offline_hub(tmp_path / "hub"):
            emb.load()
    finally:  # ~1.6 GB each: the Hub copy and the converted file (the loaded tensors stay valid)
        path.unlink()
        shutil.rmtree(tmp_path / "hub")
        shutil.rmtree(tmp_path / "rs-embed", ignore_errors=True)
    net = emb.model
    encoder_keys = {k[len(rcm.PREFIX):] for k in keys if k.startswith(rcm.PREFIX)}
    assert set(net.state_dict()) == encoder_keys
    ref = _reference(cm, rc.LARGE_PARAMS)
    ref.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(13))
    dp, dg = _compare(net, ref, x, S2_WAVES, 10.0, *_codes(1, 14))
    assert dp <= TOL and dg <= TOL, (dp, dg)
