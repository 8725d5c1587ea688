"""Our RemoteCLIP network equals open_clip's on one shared random state dict (full-size ViT-B-32, fp32).

The state dict is written as a .pt checkpoint into an offline Hub cache and loaded by the plugin's
own `load()` (strictly, converted once to safetensors), so the weights path is the production one.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, perturbed_state_dict, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_remoteclip as rc
import rs_embed_remoteclip_model as rcm  # noqa: E402

TOL = 1e-5
REVISION = "2" * 40
PROMPTS = ["a satellite image of a river", "farmland", "An airport with many airplanes.", "dense residential area"]


def _ctx(want: str) -> BatchContext:
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=None, sensor=None, want=want)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(open_clip reference, our loaded embedder, cache root) sharing one random state dict."""
    root = tmp_path_factory.mktemp("remoteclip")
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    sd = perturbed_state_dict(ref)
    ref.load_state_dict(sd, strict=True)
    ref.visual.output_tokens = True

    ckpt = root / "RemoteCLIP-ViT-B-32.pt"
    torch.save(sd, ckpt)
    spec = weights_spec_for(rc.REPO_ID, REVISION, ckpt.name, ckpt)
    build_hf_cache(root / "hub", rc.REPO_ID, REVISION, {ckpt.name: ckpt})
    ckpt.unlink()
    variant = attrs.evolve(rc.VIT_B_32, weights=spec)
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    with offline_hub(root / "hub"):
        ours = rc.RemoteCLIP(variant, "cpu")
        ours.load()
        text = ours.embed_text(PROMPTS)  # builds the text tower through the same path
    mp.undo()
    return ref, ours, root, text


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 1, 3, 224, 224, generator=g)


def test_checkpoint_was_converted_once_to_safetensors(models):
    _, ours, root, _ = models
    converted = root / "rs-embed" / "converted" / f"{ours.variant.weights.sha256}.safetensors"
    assert converted.is_file()


def test_pooled_and_grid_equal_open_clip(models, images):
    ref, ours, _, _ = models
    with torch.inference_mode():
        ref_pooled, ref_tokens = ref.visual(images[:, 0])
        out = ours.forward(images, _ctx("grid"))
    assert out.pooled.shape == (3, 512) and out.grid.shape == (3, 768, 7, 7)
    ref_grid = ref_tokens.transpose(1, 2).reshape(3, 768, 7, 7)  # row-major tokens -> (D, 7, 7)
    assert float((out.pooled - ref_pooled).abs().max()) <= TOL
    assert float((out.grid - ref_grid).abs().max()) <= TOL
    assert float(ref_pooled.abs().max()) > 0.5 and float(ref_pooled.std()) > 0.05  # not a degenerate comparison


def test_text_equals_open_clip(models):
    ref, _, _, text = models
    ids = open_clip.get_tokenizer("ViT-B-32")(PROMPTS)
    with torch.inference_mode():
        expected = ref.encode_text(ids).numpy()
    assert text.dtype == np.float32 and text.shape == (len(PROMPTS), 512)
    assert float(np.abs(text - expected).max()) <= TOL
    assert float(np.abs(expected).max()) > 0.5


def test_single_equals_batch(models, images):
    _, ours, _, _ = models
    with torch.inference_mode():
        batch = ours.forward(images, _ctx("grid"))
        for i in range(3):
            one = ours.forward(images[i : i + 1], _ctx("grid"))
            assert float((one.pooled[0] - batch.pooled[i]).abs().max()) <= TOL
            assert float((one.grid[0] - batch.grid[i]).abs().max()) <= TOL


def test_pooled_request_skips_the_grid(models, images):
    _, ours, _, _ = models
    with torch.inference_mode():
        out = ours.forward(images[:1], _ctx("pooled"))
    assert out.grid is None and out.pooled.shape == (1, 512)


def test_bad_inputs_are_refused_before_compute(models):
    from rs_embed_core.errors import SpecError

    _, ours, _, _ = models
    with pytest.raises(SpecError, match="one RGB frame"):
        ours.forward(torch.zeros(1, 2, 3, 224, 224), _ctx("pooled"))
    with pytest.raises(SpecError, match="one RGB frame"):
        ours.forward(torch.zeros(1, 1, 4, 224, 224), _ctx("pooled"))
    with pytest.raises(SpecError, match="224x224"):
        ours.forward(torch.zeros(1, 1, 3, 256, 256), _ctx("pooled"))


def test_second_load_reads_the_converted_file(models, images):
    """The .pt is gone from the Hub cache's view once converted: a fresh load still gives the same model."""
    _, ours, root, _ = models
    snapshot = root / "hub" / "models--chendelong--RemoteCLIP" / "snapshots" / REVISION
    (snapshot / ours.variant.weights.filename).unlink()
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            again = rc.RemoteCLIP(ours.variant, "cpu")
            again.load()
    finally:
        mp.undo()
    with torch.inference_mode():
        a = again.forward(images[:1], _ctx("pooled")).pooled
        b = ours.forward(images[:1], _ctx("pooled")).pooled
    assert torch.equal(a, b)


def test_vit_l_14_has_open_clips_keys_and_shapes():
    """Structure only (a full forward of ViT-L-14 is too slow for CI): built on the meta device."""
    with torch.device("meta"):
        ref = open_clip.create_model("ViT-L-14", pretrained=None, device="meta")
        ours = rcm.CLIP(rc.VIT_L_14.params)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == expected
    assert rc.VIT_L_14.pooled_dim == expected["visual.proj"][1] == expected["text_projection"][1]
    assert rc.VIT_L_14.grid_dim == expected["visual.proj"][0]
