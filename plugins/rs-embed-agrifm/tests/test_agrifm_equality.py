"""Our AgriFM encoder equals a reference assembled from torchvision 0.28's Video Swin (fp32, shared random weights).

The authors' implementation needs mmcv/mmseg (not installable here). AgriFM's backbone is the original
Video Swin (torchvision's `swin3d` reimplements it: padded, shifted, masked 3D windows with the same
relative-position-bias indexing, including its cut of the configured window's index when a window shrinks)
with one change the authors made: patch merging also halves time by averaging frame pairs (an odd count
zero-padded first). The reference is therefore torchvision's patch embedding, blocks, 2D patch merging and
final norm, with that one line — the pairwise frame mean — between a stage and its merging.

The shared weights are written as the authors' checkpoint lays them out (mmengine `state_dict`, `S2_patch_emd`
beside the other sources' patch embeddings, stored index buffers) and loaded by the plugin's own `load()`.
"""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F

from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.testing import build_hf_cache, offline_hub, perturbed_state_dict, weights_spec_for
from rs_embed_core.weights import CACHE_ENV

import rs_embed_agrifm as ra

video = pytest.importorskip("torchvision.models.video.swin_transformer")

TOL = 1e-5
REVISION = "4" * 40
SMALL = {**ra.S2, "embed_dim": 16, "depths": [2, 2, 2, 2], "heads": [1, 2, 2, 4]}
SMALL_VARIANT = attrs.evolve(ra.VARIANTS[0], name="small", pooled_dim=128, grid_dim=128, params=SMALL)
PLACEHOLDER = ra.VARIANTS[0]


class Reference(torch.nn.Module):
    """torchvision's Video Swin parts in AgriFM's order, plus the pairwise frame mean before each merging."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = video.PatchEmbed3d([4, 2, 2], in_channels=10, embed_dim=16)
        tv = video.SwinTransformer3d(patch_size=[4, 2, 2], embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                                     window_size=[8, 7, 7], stochastic_depth_prob=0.0, num_classes=1)
        self.features, self.norm = tv.features, tv.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        z = self.patch_embed(x.transpose(1, 2))  # (B, t, h, w, C)
        for layer in self.features:
            if isinstance(layer, torch.nn.Sequential):
                z = layer(z)
            else:  # merging: AgriFM's frame-pair mean, then torchvision's 2D merging
                z = F.pad(z, (0, 0, 0, 0, 0, 0, 0, z.shape[1] % 2))
                z = layer((z[:, 0::2] + z[:, 1::2]) / 2)
        z = self.norm(z)
        b, t, h, w, c = z.shape
        return z.permute(0, 4, 1, 2, 3).reshape(b, c * t, h, w)


def _checkpoint_name(key: str) -> str:
    """torchvision key -> the authors' checkpoint key."""
    if key.startswith("patch_embed."):
        return "S2_patch_emd." + key.removeprefix("patch_embed.")
    if key.startswith("norm."):
        return "backbone." + key
    parts = key.split(".")  # features.<i>...
    i = int(parts[1])
    if i % 2:  # merging after stage (i - 1) / 2
        return f"backbone.layers.{(i - 1) // 2}.downsample." + ".".join(parts[2:])
    rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
    return f"backbone.layers.{i // 2}.blocks.{parts[2]}.{rest}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("agrifm")
    torch.manual_seed(0)
    ref = Reference().eval()
    sd = perturbed_state_dict(ref, seed=2)
    ref.load_state_dict(sd, strict=True)
    state = {_checkpoint_name(k): v for k, v in sd.items()}
    assert sum(k.endswith("relative_position_index") for k in state) == 8  # stored buffers, as the authors' file
    state["HLSL30_patch_emd.proj.weight"] = torch.zeros(16, 6, 4, 2, 2)  # the other sources' embeddings
    state["Modis_patch_emd.proj.bias"] = torch.zeros(16)
    ckpt = root / "AgriFM.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": {"epoch": 50}}, ckpt)
    spec = weights_spec_for("local/agrifm-test", REVISION, ckpt.name, ckpt, license="apache-2.0")
    build_hf_cache(root / "hub", spec.repo_id, REVISION, {ckpt.name: ckpt})
    ckpt.unlink()
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = ra.AgriFM(attrs.evolve(SMALL_VARIANT, weights=spec), "cpu")
            ours.load()
            wrong = ra.AgriFM(attrs.evolve(SMALL_VARIANT, weights=spec, params={**SMALL, "depths": [2, 2, 3, 2]}), "cpu")
            with pytest.raises(WeightsError, match=r"backbone\.layers\.2\.blocks\.2\."):
                wrong.load()  # a checkpoint of another depth: refused, naming the missing block
    finally:
        mp.undo()
    return ref, ours


def _frames(t: int, side: int = 60, seed: int = 3, b: int = 2) -> torch.Tensor:
    return torch.randn(b, t, 10, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t", [8, 12, 32], ids=["8-frames", "12-frames-odd-tokens", "32-frames-full-window"])
def test_features_equal_the_torchvision_reference(models, t):
    """60 px: windows padded (30 -> 35), an odd map merged (15 -> 8), a window shrunk to the map (4 x 4)."""
    ref, ours = models
    x = _frames(t)
    with torch.inference_mode():
        expected = ref(x)
        got = ours.net(x)
    assert got.shape == expected.shape == (2, 128, 4, 4)
    assert float((got - expected).abs().max()) <= TOL
    assert float(expected.std()) > 0.1


def _ctx(b: int, want: str = "grid") -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=None,  # type: ignore[arg-type]
                        want=want, band_names=ra.BANDS)


def test_embedder_pools_the_grid_and_single_equals_batch(models):
    ref, ours = models
    x = _frames(8, b=3)
    with torch.inference_mode():
        out = ours.forward(x, _ctx(3))
        one = ours.forward(x[1:2], _ctx(1))
        expected = ref(x)
    assert float((out.grid - expected).abs().max()) <= TOL
    assert float((out.pooled - expected.mean(dim=(2, 3))).abs().max()) <= TOL
    assert float((one.grid[0] - out.grid[1]).abs().max()) <= TOL


def test_frame_order_matters(models):
    """Time is convolved and merged in order: reversing the frames changes the embedding."""
    _, ours = models
    x = _frames(8)
    with torch.inference_mode():
        a = ours.net(x)
        b = ours.net(torch.flip(x, dims=(1,)))
        same = ours.net(x.clone())
    assert float((a - same).abs().max()) == 0.0
    assert float((a - b).abs().max()) > 1e-2


def test_grid_keeps_spatial_order(models):
    """grid[:, :, row, col] is where it is on the ground: a change in one corner moves that cell most."""
    _, ours = models
    x = _frames(8, side=64, b=1)
    with torch.inference_mode():
        base = ours.net(x)
    assert base.shape[-2:] == (4, 4)
    for row, col in ((0, 0), (0, 3), (3, 1)):
        y = x.clone()
        y[..., row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] += 3.0
        with torch.inference_mode():
            moved = (ours.net(y) - base).abs().mean(dim=(0, 1))
        assert divmod(int(moved.argmax()), 4) == (row, col)


def test_window_shapes_per_stage(models):
    """Attention runs on (frames x 7 x 7) windows while the map is larger than the window, on the whole map after."""
    _, ours = models
    seen: list[tuple[int, ...]] = []
    hooks = [blk.attn.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
             for layer in ours.net.backbone.layers for blk in layer.blocks]
    try:
        with torch.inference_mode():
            ours.net(_frames(32, side=60, b=1))
    finally:
        for h in hooks:
            h.remove()
    # stage maps (t, h, w): (8, 30, 30) -> (4, 15, 15) -> (2, 8, 8) -> (1, 4, 4); windows padded to 7s
    assert seen[0] == (25, 8 * 49, 16)  # 1 x 5 x 5 windows of 8 x 7 x 7
    assert seen[2] == (9, 4 * 49, 32)  # (15 -> 21) / 7 = 3 a side, window shrunk to 4 frames
    assert seen[4] == (4, 2 * 49, 64)  # 8 -> 14: 2 x 2 windows of 2 x 7 x 7
    assert seen[6] == (1, 16, 128)  # the 4 x 4 map is one window


def test_frame_count_outside_the_range_is_refused(models):
    _, ours = models
    with pytest.raises(SpecError, match="1 <= T <= 32"):
        ours.net(_frames(33, side=8, b=1))
