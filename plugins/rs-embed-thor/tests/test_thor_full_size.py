"""THOR-base at full size, once: a checkpoint in the published layout through the real `weights=` path,
then as the default weights.

The file is what the authors' loader reads (thor/core/model_registry.py: `torch.load`, then the
`state_dict` entry, keys `encoder.<module key>`, the ignore list decoder_* / decode_* / pos_embed* /
ref_pos_embed* dropped), filled with random values. It goes through `get_embedding(..., weights=path)`:
sha256 pin, `weights_only=True` unpickling, conversion to safetensors, strict load, one forward. Then the
same file is base's default (pinned commit, digest from the commit's LFS record, faked here): verified
against that digest and loaded strictly, and the same bytes under another digest are refused.
"""

from __future__ import annotations

import gc

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.specs import OutputSpec, PointBuffer, TemporalSpec
from rs_embed_core.errors import WeightsError
from rs_embed_core.testing import FakeProvider, fake_hub_lfs, file_sha256, random_state, registered
from rs_embed_core.weights import CACHE_ENV, WEIGHTS_DIR_ENV, local_weights

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
        assert emb.data.shape == (768, 36, 36) and np.isfinite(emb.data).all()
        assert emb.meta["weights"]["sha256"] and emb.meta["variant"] == "base"
        loaded = net.state_dict()
        assert set(loaded) == set(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)
        del net, loaded
        clear_model_cache()

        default = var.weights  # the pinned commit: the file's digest comes from its LFS record
        where = tmp_path / "wd" / default.repo_id.replace("/", "__") / default.filename
        where.parent.mkdir(parents=True)
        path.rename(where)
        monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "wd"))
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache2"))
        with fake_hub_lfs({(default.repo_id, default.revision, default.filename): "0" * 64}), \
                pytest.raises(WeightsError, match="sha256"):
            rt.THOR(var, "cpu").load()  # bytes that are not the commit's file: refused
        digest = file_sha256(where)
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache3"))  # that digest stays recorded in cache2
        with fake_hub_lfs({(default.repo_id, default.revision, default.filename): digest}) as calls:
            model = rt.THOR(var, "cpu")
            model.load()
        assert calls == [(default.repo_id, rt.BASE_COMMIT, "thor_v1_vit_base.pt")]
        got = model.model.state_dict()
        assert all(torch.equal(got[k], sd[k]) for k in sd)
    finally:
        clear_model_cache()
