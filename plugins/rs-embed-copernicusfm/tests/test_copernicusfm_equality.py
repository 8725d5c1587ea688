"""Copernicus-FM encoder == torchgeo 0.8.1 CopernicusFM on one shared random state dict (fp32, <= 1e-5).

torchgeo's forward returns the pooled feature (fc_norm of the mean patch token; fc_norm is not in the
checkpoint, so it stays at its identity affine); the grid is compared with the output of torchgeo's
last block (a forward hook). The full-size check goes through the real loading path once: a random
state dict with every key torchgeo's file holds (incl. the variable-mode hypernetwork, dropped by
the plugin) is served from an offline Hub cache under the pinned repo/filename and loaded strictly.
"""

from __future__ import annotations

import gc
from functools import partial

import attrs
import pytest
import torch

from rs_embed_core.nn.fourier import fourier_features
from rs_embed_core.testing import build_hf_cache, offline_hub, random_state, weights_spec_for
from rs_embed_core.weights import CACHE_ENV

import rs_embed_copernicusfm as rcf
import rs_embed_copernicusfm_model as rcfm

cfm = pytest.importorskip("torchgeo.models.copernicusfm")

TOL = 1e-5
S2_WV, S2_BW = zip(*(rcf.S2_PRETRAIN_NM[b] for b in rcf.S2_BANDS))
TINY = {**rcf.BASE_PARAMS, "embed_dim": 64, "depth": 2, "heads": 4}
NOT_IN_FILE = ("fc_norm.",)  # torchgeo: "Both fc_norm and head are generated dynamically"


def _torchgeo(params: dict, device: str = "cpu") -> torch.nn.Module:
    norm = partial(torch.nn.LayerNorm, eps=params["norm_eps"])
    with torch.device(device):
        return cfm.CopernicusFM(img_size=params["image_size"], patch_size=params["patch_size"],
                                embed_dim=params["embed_dim"], depth=params["depth"], num_heads=params["heads"],
                                mlp_ratio=params["mlp_ratio"], norm_layer=norm).eval()


def _pair(params: dict, seed: int = 0) -> tuple[rcfm.CopernicusFM, torch.nn.Module]:
    ref = _torchgeo(params)
    keys = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith(NOT_IN_FILE)}
    sd = random_state(keys, seed)
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias"} and not unexpected
    net = rcfm.CopernicusFM(params).eval()
    net.load_state_dict({k: v for k, v in sd.items() if not k.startswith(rcfm.DROP)}, strict=True)
    return net, ref


def _compare(net, ref, x, wv, bw, meta) -> tuple[float, float]:
    captured = {}
    hook = ref.blocks[-1].register_forward_hook(lambda m, i, o: captured.update(out=o))
    with torch.inference_mode():
        pooled_ref = ref(x, meta, wavelengths=list(wv), bandwidths=list(bw), kernel_size=16)
        pooled, grid = net(x, torch.tensor(wv, dtype=torch.float32), torch.tensor(bw, dtype=torch.float32), meta)
    hook.remove()
    patches = captured["out"][:, 1:]
    b, n, d = patches.shape
    ref_grid = patches.transpose(1, 2).reshape(b, d, 14, 14)
    return (pooled - pooled_ref).abs().max().item(), (grid - ref_grid).abs().max().item()


KNOWN = torch.tensor([[11.58, 48.14, 19205.0, 0.0256], [-70.65, -33.45, 17800.0, 0.1024]])
UNKNOWN = torch.full((2, 4), float("nan"))


def test_fourier_features_equal_torchgeo_bit_for_bit():
    x = torch.tensor([0.0, 1e-4, 3.7, 440.0, 2190.0, 5e7, 1e9, 19205.0])
    for lower, upper, d in ((100.0, 1e9, 128), (1.0, 1e9, 128), (1e-4, 720.0, 384), (1.0, 365.25, 768)):
        ref = cfm.FourierExpansion(lower, upper, assert_range=False)(x, d)
        assert torch.equal(fourier_features(x, lower, upper, d), ref)


@pytest.mark.parametrize("eps", [1e-6, 1e-5])  # the authors' LayerNorm eps, and torchgeo's builder default
def test_tiny_config_equals_torchgeo_with_and_without_metadata(eps):
    net, ref = _pair({**TINY, "norm_eps": eps})
    x = torch.randn(2, 13, 224, 224, generator=torch.Generator().manual_seed(1))
    for meta in (KNOWN, UNKNOWN):
        dp, dg = _compare(net, ref, x, S2_WV, S2_BW, meta)
        assert dp <= TOL and dg <= TOL, (eps, meta, dp, dg)


def test_sar_codes_and_each_metadata_field_matter_as_in_torchgeo():
    net, ref = _pair(TINY, seed=3)
    x = torch.randn(2, 2, 224, 224, generator=torch.Generator().manual_seed(4))
    wv, bw = (rcf.SAR_PRETRAIN_NM[0],) * 2, (rcf.SAR_PRETRAIN_NM[1],) * 2
    dp, dg = _compare(net, ref, x, wv, bw, KNOWN)
    assert dp <= TOL and dg <= TOL
    with torch.inference_mode():
        base = net(x, torch.tensor(wv), torch.tensor(bw), KNOWN)[0]
        for field in range(4):  # dropping any one field to its learned token changes the embedding
            meta = KNOWN.clone()
            meta[:, field] = float("nan")
            if field < 2:
                meta[:, :2] = float("nan")
            assert (net(x, torch.tensor(wv), torch.tensor(bw), meta)[0] - base).abs().max() > 1e-4, field


def test_metadata_per_item_equals_each_item_alone_in_torchgeo():
    """A batch mixing known and unknown values: each item equals torchgeo run on that item alone."""
    net, ref = _pair(TINY, seed=5)
    x = torch.randn(2, 13, 224, 224, generator=torch.Generator().manual_seed(6))
    meta = KNOWN.clone()
    meta[1, 2] = float("nan")  # item 1: unknown date
    with torch.inference_mode():
        pooled, _ = net(x, torch.tensor(S2_WV), torch.tensor(S2_BW), meta)
        for i in range(2):
            alone = ref(x[i:i + 1], meta[i:i + 1], wavelengths=list(S2_WV), bandwidths=list(S2_BW), kernel_size=16)
            assert (pooled[i] - alone[0]).abs().max().item() <= TOL, i


def test_full_size_file_loads_strictly_offline_and_equals_torchgeo(tmp_path, monkeypatch):
    """ViT-B/16 at full size, once: the pinned-file path (.pth, strict, variable hypernetwork dropped) + equality."""
    with torch.device("meta"):
        full = _torchgeo(rcf.BASE_PARAMS, "meta")
        keys = {k: v.shape for k, v in full.state_dict().items() if not k.startswith(NOT_IN_FILE)}
    assert any(k.startswith("patch_embed_variable.") for k in keys)
    path = tmp_path / rcf.WEIGHTS.filename
    torch.save(random_state(keys, seed=7), path)
    gc.collect()
    rev = "7" * 40
    build_hf_cache(tmp_path / "hub", rcf.REPO_ID, rev, {path.name: path})
    spec = weights_spec_for(rcf.REPO_ID, rev, path.name, path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    emb = rcf.CopernicusFM(attrs.evolve(rcf.CopernicusFM.card.variant(), weights=spec), "cpu")
    with offline_hub(tmp_path / "hub"):
        emb.load()
    path.unlink()
    net = emb.model
    shared = dict(net.state_dict())
    assert set(shared) == {k for k in keys if not k.startswith(rcfm.DROP)}
    shared.update({k: torch.zeros(v) for k, v in keys.items() if k.startswith(rcfm.DROP)})  # unused in spectral mode
    shared.update({"fc_norm.weight": torch.ones(768), "fc_norm.bias": torch.zeros(768)})  # its identity init
    full.load_state_dict(shared, strict=True, assign=True)
    full.eval()
    x = torch.randn(1, 13, 224, 224, generator=torch.Generator().manual_seed(8))
    dp, dg = _compare(net, full, x, S2_WV, S2_BW, KNOWN[:1])
    assert dp <= TOL and dg <= TOL, (dp, dg)
