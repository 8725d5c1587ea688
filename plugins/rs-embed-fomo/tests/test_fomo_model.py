"""FoMo-Net_1 at full size: the authors' key layout strictly, vit-pytorch's transformer, invariants, grid order.

No installable reference of FoMo-Net exists (FoMo-Bench is a repository, not a package). What is
checked: the keys and shapes of MultiSpectralViT (single embedding layer) as FoMo-Bench's
model_zoo/multimodal_mae.py and examples/pretrained_fomo_example.py define them, written out here from
that public code; the transformer against vit-pytorch 1.17.8's `vit.Transformer` (whose layout FoMo's
copies) on shared random weights; the tokenisation by invariants that hold for the authors' forward.
"""

from __future__ import annotations

import pytest
import torch

from rs_embed_core.testing import perturbed_state_dict

import rs_embed_fomo as rf
import rs_embed_fomo_model as rfm

vit = pytest.importorskip("vit_pytorch.vit")
FULL = rf.FOMONET1.params


def authors_layout(dim: int = 768, depth: int = 12, inner: int = 768, mlp: int = 2048, patch_px: int = 256,
                   tokens: int = 17, spectral: int = 38, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of FoMo-Bench's MultiSpectralViT(image 64, patch 16, channels 1, dim 768, depth 12,
    heads 12, mlp_dim 2048, num_classes 1000, 37 modality channels, single_embedding_layer=True)."""
    keys: dict[str, tuple[int, ...]] = {
        "to_patch_embedding.1.weight": (patch_px,), "to_patch_embedding.1.bias": (patch_px,),
        "to_patch_embedding.2.weight": (dim, patch_px), "to_patch_embedding.2.bias": (dim,),
        "to_patch_embedding.3.weight": (dim,), "to_patch_embedding.3.bias": (dim,),
        "pos_embedding": (1, tokens, dim), "spectral_embedding": (1, spectral, dim), "cls_token": (1, 1, dim),
        "transformer.norm.weight": (dim,), "transformer.norm.bias": (dim,),
        "mlp_head.weight": (classes, dim), "mlp_head.bias": (classes,),
    }
    for i in range(depth):
        p = f"transformer.layers.{i}"
        keys |= {f"{p}.0.norm.weight": (dim,), f"{p}.0.norm.bias": (dim,), f"{p}.0.to_qkv.weight": (3 * inner, dim),
                 f"{p}.0.to_out.0.weight": (dim, inner), f"{p}.0.to_out.0.bias": (dim,),
                 f"{p}.1.net.0.weight": (dim,), f"{p}.1.net.0.bias": (dim,), f"{p}.1.net.1.weight": (mlp, dim),
                 f"{p}.1.net.1.bias": (mlp,), f"{p}.1.net.4.weight": (dim, mlp), f"{p}.1.net.4.bias": (dim,)}
    return keys


def _random_authors_file(seed: int) -> dict[str, torch.Tensor]:
    """Trained-like scales: LayerNorm gains near 1, Linear weights ~ 1/sqrt(fan_in), embeddings ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in authors_layout().items():
        r = torch.randn(s, generator=g)
        if len(s) == 2:
            out[k] = r / s[1] ** 0.5
        elif len(s) == 1 and k.endswith("weight"):
            out[k] = 1.0 + 0.1 * r
        else:
            out[k] = r if len(s) == 3 else 0.1 * r
    return out


def test_full_size_loads_the_authors_layout_strictly_and_drops_only_cls_token_and_head():
    net = rfm.build_net(FULL)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    layout = authors_layout()
    assert own == {k: s for k, s in layout.items() if k.split(".")[0] not in rfm.DROP}
    from rs_embed_core.weights import strict_load

    sd = _random_authors_file(0)
    strict_load(net, sd, drop=rfm.DROP)
    assert torch.equal(net.spectral_embedding, sd["spectral_embedding"])


def test_full_size_file_loads_through_the_plugin(tmp_path, monkeypatch):
    """The authors' layout at full size, saved as their .pt, through weights= -> verified file -> safetensors
    conversion -> strict load with the drop list; every tensor arrives."""
    import attrs

    from rs_embed_core.weights import CACHE_ENV, local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    sd = _random_authors_file(7)
    path = tmp_path / rf.WEIGHTS_FILE
    torch.save(sd, path)
    net = rfm.build(attrs.evolve(rf.FOMONET1, weights=local_weights(path)))
    path.unlink()
    own = net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if k.split(".")[0] not in rfm.DROP)
    x = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        pooled, grid = net(x, [rf.S2_SPECTRAL_IDS[b] for b in rf.S2_BANDS])
    assert pooled.shape == (1, 768) and grid.shape == (1, 768, 4, 4) and torch.isfinite(pooled).all()


def test_transformer_equals_vit_pytorch_full_size():
    ref = vit.Transformer(dim=768, depth=12, heads=12, dim_head=64, mlp_dim=2048).eval()
    net = rfm.build_net(FULL).transformer.eval()
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    sd = perturbed_state_dict(ref, seed=1)
    ref.load_state_dict(sd, strict=True)
    net.load_state_dict(sd, strict=True)
    x = torch.randn(2, 160, 768, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, b = net(x), ref(x)
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.fixture(scope="module")
def full_net():
    net = rfm.build_net(FULL).eval()
    net.load_state_dict({k: v for k, v in _random_authors_file(3).items() if k.split(".")[0] not in rfm.DROP})
    return net


def test_tokens_are_the_authors_per_band_patch_embeddings(full_net):
    """Token (band c, patch r, s) = embed(that 16x16 patch, row-major pixels) + spectral[id_c] + pos[1 + 4r + s]."""
    x = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(4))
    ids = [rf.S2_SPECTRAL_IDS[b] for b in rf.S2_BANDS]
    with torch.inference_mode():
        tok = full_net.tokens(x, ids)
        c, r, s = 3, 1, 2
        patch = x[0, c, 16 * r:16 * r + 16, 16 * s:16 * s + 16].reshape(1, 256)
        want = (full_net.to_patch_embedding(patch)[0] + full_net.spectral_embedding[0, ids[c]]
                + full_net.pos_embedding[0, 1 + 4 * r + s])
    assert tok.shape == (1, 160, 768)
    assert torch.allclose(tok[0, c * 16 + 4 * r + s], want, atol=1e-5)


def test_permuting_bands_with_their_ids_changes_nothing(full_net):
    x = torch.randn(2, 10, 64, 64, generator=torch.Generator().manual_seed(5))
    ids = [rf.S2_SPECTRAL_IDS[b] for b in rf.S2_BANDS]
    perm = [4, 0, 9, 2, 7, 1, 8, 3, 6, 5]
    with torch.inference_mode():
        p1, g1 = full_net(x, ids)
        p2, g2 = full_net(x[:, perm], [ids[i] for i in perm])
        p3, _ = full_net(x[:, perm], ids)  # same pixels under the wrong ids: a different embedding
    assert g1.shape == (2, 768, 4, 4)
    assert torch.allclose(p1, p2, atol=1e-4) and torch.allclose(g1, g2, atol=1e-4)
    assert (p1 - p3).abs().max() > 1e-3


def test_grid_is_row_major_in_patches():
    """With residual branches zeroed the transformer is its final norm: a change in the top-right 16 x 16 patch
    of one band moves grid cell (0, 3) only."""
    net = rfm.build_net({**FULL, "depth": 1}).eval()
    with torch.no_grad():
        for layer in net.transformer.layers:
            layer[0].to_out[0].weight.zero_()
            layer[0].to_out[0].bias.zero_()
            layer[1].net[4].weight.zero_()
            layer[1].net[4].bias.zero_()
    x = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(6))
    y = x.clone()
    y[0, 2, 0:16, 48:64] += torch.linspace(0, 1, 256).reshape(16, 16)  # not a constant: LayerNorm removes those
    ids = list(range(7, 17))
    with torch.inference_mode():
        changed = (net(x, ids)[1] - net(y, ids)[1]).abs().amax(dim=(0, 1)) > 1e-6
    assert changed.tolist() == [[False, False, False, True]] + [[False] * 4] * 3
