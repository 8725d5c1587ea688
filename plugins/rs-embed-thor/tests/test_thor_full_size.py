"""THOR-base at full size, once: a checkpoint in the published layout through the real `weights=` path.

The file is what the authors' loader reads (thor/core/model_registry.py: `torch.load`, then the
`state_dict` entry, keys `encoder.<module key>`, the ignore list decoder_* / decode_* / pos_embed* /
ref_pos_embed* dropped), filled with random values. It goes through `get_embedding(..., weights=path)`:
sha256 pin, `weights_only=True` unpickling, conversion to safetensors, strict load, one forward.
"""

from __future__ import annotations

import gc

import attrs
import numpy as np
import torch

from rs_embed_core.specs import OutputSpec, PointBuffer, TemporalSpec
from rs_embed_core.testing import FakeProvider, random_state, registered
from rs_embed_core.weights import CACHE_ENV, local_weights

import rs_embed_thor as rt
import rs_embed_thor_model as rtm

PUBLISHED_BASE_BYTES = 376_628_228  # FM4CS/THOR-1.0-base thor_v1_vit_base.pt, as another project pins it


def test_base_file_in_the_published_layout_loads_strictly_and_embeds(tmp_path, monkeypatch):
    from rs_embed import get_embedding
    from rs_embed_core.runner import clear_model_cache, load_embedder

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in rtm.ThorEncoder(rt.THOR.card.variant("base").params).state_dict().items()}
    tensor_bytes = 4 * sum(int(np.prod(s)) for s in shapes.values())
    # the key set accounts for the published file: its size exceeds the fp32 tensors by < 0.03 % (zip headers)
    assert 0 < PUBLISHED_BASE_BYTES - tensor_bytes < 3e-4 * PUBLISHED_BASE_BYTES
    sd = random_state(shapes, seed=11)
    sd["encoder_slopes"] = sd["encoder_slopes"].abs()  # slopes are positive
    file_sd = {f"encoder.{k}": v for k, v in sd.items()}
    file_sd["encoder.decoder_embed.weight"] = torch.zeros(4, 768)  # ignore list: never loaded
    file_sd["encoder.pos_embed.10"] = torch.zeros(1296, 640)
    path = tmp_path / "thor_v1_vit_base.pt"
    torch.save({"state_dict": file_sd, "epoch": 399}, path)
    del file_sd
    gc.collect()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    roi = PointBuffer(121.5, 31.2, 1440)  # 288 px at 10 m: ground cover 2880 m, no resize needed
    when = TemporalSpec.range("2022-06-01", "2022-09-01")
    provider = FakeProvider()
    try:
        with registered(rt.THOR):
            emb = get_embedding("thor", roi, when, OutputSpec.grid(), backend=provider, device="cpu", weights=path)
            var = rt.THOR.card.variant("base")
            net = load_embedder(rt.THOR, attrs.evolve(var, weights=local_weights(path)), "cpu").model
        path.unlink()
        assert emb.data.shape == (768, 36, 36) and np.isfinite(emb.data).all()
        assert emb.meta["weights"]["sha256"] and emb.meta["variant"] == "base"
        loaded = net.state_dict()
        assert set(loaded) == set(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    finally:
        clear_model_cache()
