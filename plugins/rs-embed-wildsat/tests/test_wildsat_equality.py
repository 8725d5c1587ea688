"""WildSAT backbones == torchvision 0.28.0's vit_b_16 / resnet50 / swin_t at full size on shared random weights.

Compared: the classifier output (WildSAT's 1000-d feature) and the grid (ViT: tokens after encoder.ln;
ResNet-50: layer4; Swin-T: norm(features)). Keys and shapes must equal torchvision's one for one, which
is what lets the authors' checkpoints (torchvision state dicts under `backbone.`) load strictly.
"""

from __future__ import annotations

import pytest
import torch

from rs_embed_core.testing import perturbed_state_dict

import rs_embed_wildsat_model as wm

tvm = pytest.importorskip("torchvision.models")
TOL = 1e-5


def _ref_grid(arch: str, ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if arch == "vit_b_16":
        tokens = ref.encoder(torch.cat([ref.class_token.expand(x.shape[0], -1, -1),
                                        ref._process_input(x)], dim=1))
        return tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, 14, 14)
    if arch == "resnet50":
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        return ref.layer4(ref.layer3(ref.layer2(ref.layer1(y))))
    return ref.norm(ref.features(x)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("arch,size", [("vit_b_16", 224), ("resnet50", 512), ("swin_t", 512)])
def test_backbone_equals_torchvision_full_size(arch, size):
    ref = getattr(tvm, arch)(weights=None).eval()
    net = wm.BACKBONES[arch]().eval()
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    sd = perturbed_state_dict(ref, seed=1)
    ref.load_state_dict(sd, strict=True)
    net.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits, grid = net(x)
        ref_logits, ref_grid = ref(x), _ref_grid(arch, ref, x)
    assert ref_logits.abs().max() > 1e-3 and logits.shape == (2, 1000)
    assert (logits - ref_logits).abs().max().item() <= TOL * max(1.0, ref_logits.abs().max().item())
    assert grid.shape == ref_grid.shape
    assert (grid - ref_grid).abs().max().item() <= TOL * max(1.0, ref_grid.abs().max().item())
    if arch == "swin_t":  # the constant the loader checks a file against is torchvision's
        for i, j in ((1, 0), (7, 1)):
            assert torch.equal(ref.features[i][j].attn.relative_position_index, wm.relative_position_index(7))


def test_swin_shifted_windows_matter_on_a_map_smaller_than_padding():
    """At 512 px the last stage is 16 x 16 (padded to 21): shifted blocks run with masks; at 224 the 7 x 7
    last stage is one window and torchvision skips the shift. Both must agree with torchvision."""
    ref = tvm.swin_t(weights=None).eval()
    net = wm.SwinT().eval()
    sd = perturbed_state_dict(ref, seed=2)
    ref.load_state_dict(sd)
    net.load_state_dict(sd)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert (net(x)[0] - ref(x)).abs().max().item() <= TOL * max(1.0, ref(x).abs().max().item())


def test_default_variant_full_size_training_checkpoint_loads_and_equals_torchvision(tmp_path, monkeypatch):
    """ViT-B/16 at full size in the authors' training-checkpoint layout through weights= (strict, module.
    stripped): the backbone equals torchvision's on the same weights and the default pooled is the image head."""
    import argparse

    import attrs

    import rs_embed_wildsat as ws
    from rs_embed_core.weights import CACHE_ENV, local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    var = ws.WildSATEmbedder.card.variant()
    ref = tvm.vit_b_16(weights=None).eval()
    sd = perturbed_state_dict(ref, seed=4)
    ref.load_state_dict(sd)
    heads = {f"decoder.backbone{i}.0.weight": torch.randn(256, 1000, generator=torch.Generator().manual_seed(i)) * 0.03
             for i in (1, 2, 3)}
    ckpt = {"epoch": 1, "opt": argparse.Namespace(satellite_encoder="vitb16"),
            "satellite_state_dict": {f"module.{k}": v for k, v in
                                     {**{f"backbone.{k}": v for k, v in sd.items()}, **heads}.items()}}
    path = tmp_path / "vitb16-imagenet-bnfc.pth"
    torch.save(ckpt, path)
    del ckpt
    net = wm.build(attrs.evolve(var, weights=local_weights(path)))
    path.unlink()
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        pooled, grid = wm.embed(net, x, var.params)
        small = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        want = ref(small - small.min()) @ heads["decoder.backbone3.0.weight"].T
    assert pooled.shape == (1, 256) and grid.shape == (1, 768, 14, 14)
    assert (pooled - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())
