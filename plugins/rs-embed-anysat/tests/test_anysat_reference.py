"""Equality with the authors' release model on shared random weights, wherever their code is importable.

Their code is not installable (torch.hub only: `torch.hub.load('gastruc/anysat', 'anysat')`), so this test
runs when ANYSAT_REFERENCE_DIR names a checkout of github.com/gastruc/AnySat (or torch.hub's cache holds
one) and is skipped otherwise. It builds their `hubconf.AnySat(model_size=..., flash_attn=False)`, loads
one random state dict into both models, and compares outputs 'tile', 'patch' and 'dense' for Sentinel-2
series at several patch sizes in metres.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

import rs_embed_anysat_model as ram

SIZES = {"tiny": (256, 2, 4), "base": (768, 6, 12)}  # hubconf get_default_config


def _reference_dir() -> Path | None:
    given = os.environ.get("ANYSAT_REFERENCE_DIR")
    hub = Path(torch.hub.get_dir()) / "gastruc_anysat_main"
    for candidate in (Path(given) if given else None, hub):
        if candidate is not None and (candidate / "hubconf.py").is_file():
            return candidate
    return None


REF = _reference_dir()
pytestmark = pytest.mark.skipif(REF is None, reason="the authors' AnySat code is not here (ANYSAT_REFERENCE_DIR)")


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_outputs_equal_the_authors_release_model(size):
    sys.path[:0] = [str(REF), str(REF / "src")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from hubconf import AnySat as Reference

            torch.manual_seed(0)
            ref = Reference(model_size=size, flash_attn=False).eval()
    finally:
        del sys.path[:2]
    sd = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in ref.model.state_dict().items()}
    ref.model.load_state_dict(sd, strict=True)
    dim, depth, heads = SIZES[size]
    ours = ram.AnySatEncoder({"embed_dim": dim, "depth": depth, "heads": heads, "mlp_ratio": 4.0}).eval()
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(1)
    x, days = torch.randn(2, 5, 10, 12, 12, generator=g), torch.randint(0, 365, (2, 5), generator=g).float()
    worst = {}
    with torch.no_grad():
        for patch_m in (10, 20, 30, 40, 60, 120):
            data = {"s2": x, "s2_dates": days}
            tile, grid, dense = ours.embed_series(x, days, "s2", patch_m // 10, dense=True)
            pairs = {"tile": (tile, ref(data, patch_size=patch_m, output="tile")),
                     "patch": (grid, ref(data, patch_size=patch_m, output="patch").permute(0, 3, 1, 2)),
                     "dense": (dense, ref(data, patch_size=patch_m, output="dense", output_modality="s2")
                               .permute(0, 3, 1, 2))}
            for name, (a, b) in pairs.items():
                assert a.shape == b.shape, (name, patch_m)
                worst[name] = max(worst.get(name, 0.0), ((a - b).abs().max() / b.abs().max()).item())
    assert max(worst.values()) < 2e-6, worst  # relative to the output's magnitude (about 4 tiny, 15 base)
