"""The plugin author's testing kit (see docs/testing.md).

- `FakeProvider`: deterministic, world-coordinate pixels with call records, latency and faults.
- `build_hf_cache`, `offline_hub`, `random_weights_file`, `weights_spec_for`: random weights
  served by huggingface_hub from an offline cache, so loading code runs exactly as in production;
  `fake_hub_lfs`: the Hub's file metadata for `WeightsSpec.from_revision` digests.
- `perturbed_state_dict`, `random_state`: shared random weights for equality tests against a
  reference implementation.
- `check_embedder_contract`, `check_strict_loading`: what every embedder must pass;
  `random_weights` lets a model with weights run end to end on random ones.

Importing this module does not import torch; the weight helpers import it when called.
"""

from __future__ import annotations

from .contract import (
    ContractReport,
    StrictLoadingReport,
    check_embedder_contract,
    check_strict_loading,
    default_spatials,
    random_repo_id,
    random_weights,
    registered,
)
from .hub import (
    build_hf_cache,
    fake_hub_lfs,
    file_sha256,
    hf_cache_file,
    offline_hub,
    perturbed_state_dict,
    random_state,
    random_weights_file,
    weights_spec_for,
)
from .provider import S2_L2A_BANDS, FakeProvider

__all__ = [
    "FakeProvider",
    "S2_L2A_BANDS",
    "build_hf_cache",
    "fake_hub_lfs",
    "offline_hub",
    "random_weights_file",
    "perturbed_state_dict",
    "random_state",
    "weights_spec_for",
    "file_sha256",
    "check_embedder_contract",
    "check_strict_loading",
    "random_weights",
    "random_repo_id",
    "hf_cache_file",
    "registered",
    "default_spatials",
    "ContractReport",
    "StrictLoadingReport",
]
