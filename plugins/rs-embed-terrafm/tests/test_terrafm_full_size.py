"""TerraFM-B at full size, once: a checkpoint in the published layout through the real `weights=` path.

The file is what the authors' README loads (`torch.load("TerraFM-B.pth")` straight into `terrafm_base()`):
a plain state dict of the `TerraFM` module's keys, no prefix, filled with random values. It goes through
`get_embedding(..., weights=path)`: sha256 pin, `weights_only=True` unpickling, conversion to safetensors,
strict load, one forward on each modality's default request.
"""

from __future__ import annotations

import gc

import attrs
import numpy as np
import torch

from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import FakeProvider, random_state, registered
from rs_embed_core.weights import CACHE_ENV, local_weights

import rs_embed_terrafm as rt
import rs_embed_terrafm_model as rtm


def test_base_file_in_the_published_layout_loads_strictly_and_embeds(tmp_path, monkeypatch):
    from rs_embed import get_embedding
    from rs_embed_core.runner import clear_model_cache, load_embedder

    with torch.device("meta"):
        net = rtm.TerraFMEncoder(rt.TerraFM.card.variant("base").params)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert round(sum(int(np.prod(s)) for s in shapes.values()) / 1e6, 1) == 113.0
    sd = random_state(shapes, seed=11)
    path = tmp_path / "TerraFM-B.pth"
    torch.save(sd, path)
    gc.collect()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    roi = PointBuffer(121.5, 31.2, 1120)  # 224 px at 10 m
    when = TemporalSpec.range("2022-06-01", "2022-09-01")
    provider = FakeProvider(bands=rt.S2_BANDS + rt.S1_BANDS)
    try:
        with registered(rt.TerraFM):
            grid = get_embedding("terrafm", roi, when, OutputSpec.grid(), backend=provider, device="cpu", weights=path)
            s1 = get_embedding("terrafm_b", roi, when, backend=provider, device="cpu", weights=path,
                               sensor=SensorSpec(rt.S1_GRD, rt.S1_BANDS, 10))
            net = load_embedder(rt.TerraFM, attrs.evolve(rt.TerraFM.card.variant("base"), weights=local_weights(path)),
                                "cpu").model
        path.unlink()
        assert grid.data.shape == (768, 14, 14) and np.isfinite(grid.data).all()
        assert s1.data.shape == (768,) and np.isfinite(s1.data).all()
        assert grid.meta["weights"]["sha256"] and grid.meta["variant"] == "base"
        loaded = net.state_dict()
        assert set(loaded) == set(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    finally:
        clear_model_cache()
