"""AnySat-base at full size, once: a checkpoint in the release layout through the real `weights=` path.

The file is what the authors' hub entry point reads (hubconf.py: `torch.hub.load_state_dict_from_url(...)
["state_dict"]`, loaded strictly into `AnyModule`), filled with random values. It goes through
`get_embedding(..., weights=path)`: sha256 pin, `weights_only=True` unpickling, conversion to safetensors,
strict load, one forward on the default input (8 frames, 24 px, 10 m patches).
"""

from __future__ import annotations

import gc

import attrs
import numpy as np
import torch

from rs_embed_core.specs import OutputSpec, PointBuffer, TemporalSpec
from rs_embed_core.testing import FakeProvider, random_state, registered
from rs_embed_core.weights import CACHE_ENV, local_weights

import rs_embed_anysat as ra
import rs_embed_anysat_model as ram

PUBLISHED_FILE_MB = 504  # models/AnySat.pth as a public record sizes it (MB, rounded)


def test_base_file_in_the_release_layout_loads_strictly_and_embeds(tmp_path, monkeypatch):
    from rs_embed import get_embedding
    from rs_embed_core.runner import clear_model_cache, load_embedder

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ram.AnySatEncoder(ra.AnySat.card.variant().params).state_dict().items()}
    tensor_bytes = 4 * sum(int(np.prod(s)) for s in shapes.values())
    assert round(tensor_bytes / 1e6) == PUBLISHED_FILE_MB  # the key set accounts for the published file
    sd = random_state(shapes, seed=7)
    path = tmp_path / "AnySat.pth"
    torch.save({"state_dict": sd}, path)
    gc.collect()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    roi = PointBuffer(2.35, 48.85, 120)  # 24 px at 10 m
    when = TemporalSpec.range("2022-01-01", "2023-01-01")
    try:
        with registered(ra.AnySat):
            emb = get_embedding("anysat", roi, when, OutputSpec.grid(), backend=FakeProvider(), device="cpu",
                                weights=path)
            net = load_embedder(ra.AnySat, attrs.evolve(ra.AnySat.card.variant(), weights=local_weights(path)),
                                "cpu").model
        path.unlink()
        assert emb.data.shape == (768, 24, 24) and np.isfinite(emb.data).all()
        assert emb.meta["weights"]["sha256"] and emb.meta["variant"] == "base"
        assert len(emb.meta["model_extra"]["days_of_year"]) == 8
        loaded = net.state_dict()
        assert set(loaded) == set(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    finally:
        clear_model_cache()
