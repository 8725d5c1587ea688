"""The plugin author's testing kit: FakeProvider, offline Hub cache helpers, contract checks."""

from __future__ import annotations

import threading
from pathlib import Path
import time

import numpy as np
import pytest

from rs_embed_core.card import InputSpec, ModelCard, Variant, WeightsSpec
from rs_embed_core.collections import COLLECTIONS
from rs_embed_core.embedder import EmbedOutput, Embedder
from rs_embed_core.errors import ProviderError, UnknownBandError, WeightsError
from rs_embed_core.grid import grid_for
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.providers import FetchRequest, Provider
from rs_embed_core.specs import PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    build_hf_cache,
    check_embedder_contract,
    check_strict_loading,
    offline_hub,
    random_weights_file,
    weights_spec_for,
)

S2 = "COPERNICUS/S2_SR_HARMONIZED"
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
REV = "89abcdef0123456789abcdef0123456789abcdef"


def _req(spatial, bands=("B2", "B3", "B4", "B8"), composite="median", temporal=SUMMER, gsd=10.0):
    sensor = SensorSpec(S2, bands, gsd, composite=composite)
    return FetchRequest(grid_for(spatial, gsd), temporal, sensor)


# --------------------------------------------------------------------------- FakeProvider


def test_fake_provider_is_a_provider_with_s2_bands():
    p = FakeProvider()
    assert isinstance(p, Provider)
    assert p.bands == COLLECTIONS[S2].band_names
    with pytest.raises(UnknownBandError, match="SR_B4"):
        FakeProvider(bands=("B4",)).check(SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4",), 30.0))
    FakeProvider(bands=("B4",)).check(SensorSpec(S2, ("B4",), 10.0))


def test_overlapping_rois_get_identical_pixels_on_shared_cells():
    a = _req(PointBuffer(121.5, 31.2, 320))
    b = _req(PointBuffer(121.5012, 31.1993, 320))  # ~110 m east, ~80 m south: partial overlap
    ra, rb = FakeProvider().fetch(a), FakeProvider().fetch(b)
    ga, gb = ra.grid, rb.grid
    assert ga.crs == gb.crs and ga.shape == gb.shape == (64, 64)
    dc = round((gb.x0 - ga.x0) / ga.res)  # lattice offsets of b inside a
    dr = round((ga.y0 - gb.y0) / ga.res)
    assert 0 < dc < 64 and 0 < dr < 64
    shared_a = ra.data[:, :, dr:, dc:]
    shared_b = rb.data[:, :, : 64 - dr, : 64 - dc]
    np.testing.assert_array_equal(shared_a, shared_b)
    assert not np.array_equal(ra.data, rb.data)


def test_pixels_are_smooth_varied_in_range_and_seeded():
    req = _req(PointBuffer(10.0, 45.0, 640))
    r = FakeProvider().fetch(req)
    assert r.data.dtype == np.float32 and r.data.shape == (1, 4, 128, 128)
    assert r.valid.all() and r.bands == ("B2", "B3", "B4", "B8")
    assert 0.0 <= r.data.min() and r.data.max() <= 10000.0
    per_band_std = r.data[0].std(axis=(1, 2))
    assert (per_band_std > 50).all()  # a real spatial pattern, not a constant
    assert np.abs(np.diff(r.data[0], axis=2)).max() < 250  # smooth at 10 m
    means = r.data[0].mean(axis=(1, 2))
    assert len(set(np.round(means).tolist())) == 4  # per-band offsets
    np.testing.assert_array_equal(FakeProvider(seed=0).fetch(req).data, r.data)
    assert not np.array_equal(FakeProvider(seed=1).fetch(req).data, r.data)


def test_same_band_same_values_whatever_the_band_list():
    roi = PointBuffer(10.0, 45.0, 100)
    one = FakeProvider().fetch(_req(roi, bands=("B8",)))
    many = FakeProvider().fetch(_req(roi, bands=("B2", "B8")))
    np.testing.assert_array_equal(one.data[:, 0], many.data[:, 1])


def test_composite_none_gives_dated_frames_inside_the_window():
    r = FakeProvider().fetch(_req(PointBuffer(10.0, 45.0, 50), composite="none"))
    assert r.data.shape[0] == len(r.times) == 4  # Jun 1, Jul 1, Jul 31, Aug 30
    assert all(SUMMER.contains(t) for t in r.times)
    assert not np.array_equal(r.data[0], r.data[2])


def test_calls_are_counted_and_keys_recorded_across_threads():
    p = FakeProvider()
    reqs = [_req(PointBuffer(10.0 + 0.001 * i, 45.0, 20)) for i in range(4)]

    def work():
        for r in reqs * 5:
            p.fetch(r)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.calls == 6 * 20 == len(p.keys) == len(p.requests)
    assert set(p.keys) == {r.key for r in reqs}


def test_latency_and_concurrency_are_observable():
    p = FakeProvider(latency_s=0.2)
    req = _req(PointBuffer(10.0, 45.0, 20))
    t0 = time.perf_counter()
    threads = [threading.Thread(target=p.fetch, args=(req,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert elapsed >= 0.2
    assert p.max_in_flight >= 2 and elapsed < 0.75  # slept in parallel, not in series


def test_faults_by_call_number_and_by_predicate():
    p = FakeProvider(fail_on={2})
    req = _req(PointBuffer(10.0, 45.0, 20))
    p.fetch(req)
    with pytest.raises(ProviderError, match="call 2"):
        p.fetch(req)
    p.fetch(req)
    assert p.calls == 3

    big = FakeProvider(fail_on=lambda r: r.grid.width > 8)
    big.fetch(_req(PointBuffer(10.0, 45.0, 20)))  # 4x4
    with pytest.raises(ProviderError):
        big.fetch(_req(PointBuffer(10.0, 45.0, 100)))  # 20x20


# --------------------------------------------------------------------------- offline hub + weights helpers


def test_build_hf_cache_serves_hf_hub_download_offline(tmp_path):
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    before = (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE)
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a path")
    snap = build_hf_cache(tmp_path / "hub", "acme/net", REV, {"a.bin": b"hello", "sub/b.bin": src})
    assert snap == tmp_path / "hub" / "models--acme--net" / "snapshots" / REV
    with offline_hub(tmp_path / "hub"):
        assert constants.HF_HUB_OFFLINE is True
        p = hf_hub_download("acme/net", "a.bin", revision=REV)
        assert Path(p).read_bytes() == b"hello"
        assert Path(hf_hub_download("acme/net", "sub/b.bin", revision=REV)).read_bytes() == b"from a path"
        assert Path(hf_hub_download("acme/net", "a.bin")).read_bytes() == b"hello"  # via refs/main
        t0 = time.perf_counter()
        with pytest.raises(LocalEntryNotFoundError):
            hf_hub_download("acme/net", "missing.bin", revision=REV)
        assert time.perf_counter() - t0 < 5  # offline: no network retries
    assert (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE) == before


def test_build_hf_cache_rejects_unsafe_names(tmp_path):
    with pytest.raises(WeightsError):
        build_hf_cache(tmp_path, "acme/net", REV, {"../x.bin": b""})
    with pytest.raises(WeightsError):
        build_hf_cache(tmp_path, "acme/..", REV, {"x.bin": b""})
    assert not (tmp_path.parent / "x.bin").exists()


def test_random_weights_file_and_spec_round_trip(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from rs_embed_core.weights import load_state_dict

    m = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5))
    path = random_weights_file(m, tmp_path / "w.safetensors", seed=3)
    again = random_weights_file(m, tmp_path / "w2.safetensors", seed=3)
    other = random_weights_file(m, tmp_path / "w3.safetensors", seed=4)
    assert path.read_bytes() == again.read_bytes() != other.read_bytes()
    spec = weights_spec_for("acme/net", REV, "w.safetensors", path)
    build_hf_cache(tmp_path / "hub", "acme/net", REV, {"w.safetensors": path})
    monkeypatch.setenv("RS_EMBED_CACHE", str(tmp_path / "rs"))
    with offline_hub(tmp_path / "hub"):
        sd = load_state_dict(spec)
    ref = m.state_dict()
    assert sd.keys() == ref.keys()
    for k, v in ref.items():
        assert sd[k].shape == v.shape and sd[k].dtype == v.dtype
    assert torch.equal(sd["1.num_batches_tracked"], ref["1.num_batches_tracked"])  # int buffer kept
    assert 0.005 < sd["0.weight"].std() < 0.05 and not torch.equal(sd["0.weight"], ref["0.weight"])
    m.load_state_dict(sd, strict=True)

    pt = random_weights_file({"w": (2, 3), "idx": np.arange(4)}, tmp_path / "w.pt")
    obj = torch.load(pt, weights_only=True)
    assert obj["w"].shape == (2, 3) and obj["w"].dtype == torch.float32
    assert obj["idx"].tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- contract checks


class _NumpyPatchEmbedder(Embedder):
    """4x4 patch means projected by a fixed matrix: small, deterministic, batch-independent."""

    card = ModelCard(
        id="kit-test-numpy",
        description="testing-kit fixture",
        input=InputSpec(S2, ("B4", "B3", "B2"), 10.0, image_size=16),
        variants=(Variant("tiny", pooled_dim=8, grid_dim=8),),
        preprocessing=[("scale", {"factor": 1e-4}), ("resize", {"size": 16})],
    )

    def load(self):
        self.w = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)

    def grid(self, x):
        b, t, c, h, w = x.shape
        patches = x.mean(axis=1).reshape(b, c, h // 4, 4, w // 4, 4).mean(axis=(3, 5))
        return np.tanh(np.einsum("dc,bchw->bdhw", self.w, patches))

    def forward(self, x, ctx):
        g = self.grid(x)
        return EmbedOutput(pooled=g.mean(axis=(2, 3)), grid=g)


class _BatchDependent(_NumpyPatchEmbedder):
    card = ModelCard(id="kit-test-batchdep", description="broken", input=_NumpyPatchEmbedder.card.input,
                     variants=_NumpyPatchEmbedder.card.variants, preprocessing=_NumpyPatchEmbedder.card.preprocessing)

    def forward(self, x, ctx):
        g = self.grid(x)
        g = g - g.mean(axis=0, keepdims=True) * 0.5  # leaks information across the batch
        return EmbedOutput(pooled=g.mean(axis=(2, 3)), grid=g)


class _Drifting(_NumpyPatchEmbedder):
    card = ModelCard(id="kit-test-drifting", description="broken", input=_NumpyPatchEmbedder.card.input,
                     variants=_NumpyPatchEmbedder.card.variants, preprocessing=_NumpyPatchEmbedder.card.preprocessing)

    def forward(self, x, ctx):
        self.n = getattr(self, "n", 0) + 1  # hidden state that changes every call
        g = self.grid(x) + 1e-3 * self.n
        return EmbedOutput(pooled=g.mean(axis=(2, 3)), grid=g)


class _WrongDim(_NumpyPatchEmbedder):
    card = ModelCard(id="kit-test-wrongdim", description="broken", input=_NumpyPatchEmbedder.card.input,
                     variants=(Variant("tiny", pooled_dim=16, grid_dim=8),),
                     preprocessing=_NumpyPatchEmbedder.card.preprocessing)


@pytest.fixture
def registered():
    api = pytest.importorskip("rs_embed_core.api", reason="awaits the runner / public API")
    del api

    class Plugin:
        @hookimpl
        def register_embedders(self, register):
            for cls in (_NumpyPatchEmbedder, _BatchDependent, _Drifting, _WrongDim):
                register(cls)

    plugin = Plugin()
    pm.register(plugin, name="kit-test-plugin")
    yield
    pm.unregister(plugin)


def test_contract_passes_for_a_correct_embedder(registered):
    provider = FakeProvider()
    report = check_embedder_contract("kit-test-numpy", provider=provider)
    assert report.pooled_dim == 8 and report.rois == 2
    assert report.grid_shapes == ((8, 4, 4), (8, 4, 4))
    assert report.max_batch_single_diff == 0.0
    assert "deterministic" in report.checks and "grid footprint" in report.checks
    assert provider.calls >= 2
    # the class itself is accepted too
    assert check_embedder_contract(_NumpyPatchEmbedder).model == "kit-test-numpy"


def test_contract_needs_the_class_registered():
    pytest.importorskip("rs_embed_core.api", reason="awaits the runner / public API")

    class Unregistered(_NumpyPatchEmbedder):
        card = ModelCard(id="kit-test-unregistered", description="x", input=_NumpyPatchEmbedder.card.input,
                         variants=_NumpyPatchEmbedder.card.variants, preprocessing=())

    with pytest.raises(AssertionError, match="register the plugin first"):
        check_embedder_contract(Unregistered)


def test_contract_catches_batch_dependence(registered):
    with pytest.raises(AssertionError, match="batch item differs from its single call"):
        check_embedder_contract("kit-test-batchdep")


def test_contract_catches_nondeterminism(registered):
    with pytest.raises(AssertionError, match="two identical calls differ"):
        check_embedder_contract("kit-test-drifting")


def test_contract_catches_a_card_dim_mismatch(registered):
    with pytest.raises(AssertionError, match=r"card says \(1, 16\)"):  # the runtime's check, as a failed check
        check_embedder_contract("kit-test-wrongdim")


def _torch_embedders():
    torch = pytest.importorskip("torch")
    from rs_embed_core.weights import load_state_dict, strict_load

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 4)
            self.norm = torch.nn.LayerNorm(4)

    # the kit replaces revision and sha256 with those of the random files it writes
    weights = WeightsSpec("acme/kit-net", REV, "model.safetensors", "0" * 64, "test")
    card = ModelCard(
        id="kit-test-torch", description="fixture", input=_NumpyPatchEmbedder.card.input,
        variants=(Variant("s", 4, 4, weights=weights),), preprocessing=_NumpyPatchEmbedder.card.preprocessing,
    )

    class Strict(Embedder):
        uses_torch = True

        def load(self):
            self.net = Net().eval()
            strict_load(self.net, load_state_dict(self.variant.weights), drop=("head",))

        def forward(self, x, ctx):
            b, t, c, h, w = x.shape
            patches = x.mean(dim=1).reshape(b, c, h // 4, 4, w // 4, 4).mean(dim=(3, 5))
            g = self.net.norm(self.net.proj(patches.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
            return EmbedOutput(pooled=g.mean(dim=(2, 3)), grid=g)

    class Lax(Strict):
        def load(self):
            self.net = Net().eval()
            self.net.load_state_dict(load_state_dict(self.variant.weights), strict=False)

    Strict.card = card
    Lax.card = card
    return Strict, Lax


def test_random_weights_run_a_weighted_model_through_the_contract(tmp_path):
    pytest.importorskip("rs_embed_core.api", reason="awaits the runner / public API")
    from huggingface_hub import constants

    from rs_embed_core.testing import random_weights
    from rs_embed_core.weights import WeightsError as WE, load_state_dict

    strict, _ = _torch_embedders()
    original = strict.card
    offline_before = constants.HF_HUB_OFFLINE

    class Plugin:
        @hookimpl
        def register_embedders(self, register):
            register(strict)

    plugin = Plugin()
    pm.register(plugin, name="kit-test-torch-plugin")
    try:
        with random_weights("kit-test-torch", None, tmp_path, seed=1) as spec:
            assert strict.card.variant("s").weights == spec != original.variant("s").weights
            report = check_embedder_contract("kit-test-torch")
            sd = load_state_dict(spec)
        assert sorted(sd) == ["norm.bias", "norm.weight", "proj.bias", "proj.weight"]
        assert report.grid_shapes == ((4, 4, 4), (4, 4, 4))
        assert strict.card is original and constants.HF_HUB_OFFLINE is offline_before
        with offline_hub(tmp_path / "empty"), pytest.raises(WE):  # the card's own (absent) weights again
            strict(original.variant("s"), "cpu").load()
    finally:
        pm.unregister(plugin)


def test_check_strict_loading_passes_for_strict_loader(tmp_path):
    from huggingface_hub import constants

    strict, _ = _torch_embedders()
    before = (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE)
    report = check_strict_loading(strict, None, tmp_path)
    assert report.keys == 4 and report.skipped is None
    assert report.checks == ("fitting file loads", "extra key refused", "missing key refused", "wrong shape refused")
    assert (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE) == before


def test_check_strict_loading_catches_a_lax_loader(tmp_path):
    _, lax = _torch_embedders()
    with pytest.raises(AssertionError, match="accepted a weights file holding only an unknown key"):
        check_strict_loading(lax, None, tmp_path)
    # with the keys given, the lax loader is caught on the extra key
    torch = pytest.importorskip("torch")
    net_keys = {"proj.weight": (4, 3), "proj.bias": (4,), "norm.weight": (4,), "norm.bias": (4,)}
    with pytest.raises(AssertionError, match="extra key"):
        check_strict_loading(lax, None, tmp_path, state_dict=net_keys)
    del torch


def test_check_strict_loading_skips_weight_free_variants(tmp_path, registered):
    report = check_strict_loading("kit-test-numpy", None, tmp_path)
    assert report.skipped and report.checks == ()


def test_perturbed_state_dict_and_random_state_follow_their_rules():
    import torch

    from rs_embed_core.testing import perturbed_state_dict, random_state

    ref = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    sd = perturbed_state_dict(ref, seed=3, keep=lambda k: k == "0.bias",
                              override=lambda k, v, g: torch.full_like(v, 7.0) if k == "0.weight" else None)
    assert torch.equal(sd["0.bias"], ref[0].bias.detach()) and (sd["0.weight"] == 7.0).all()
    assert not torch.equal(sd["1.weight"], torch.ones(8)) and (sd["1.weight"] - 1).abs().max() < 1.0
    assert sd["1.bias"].abs().max() < 0.2 and sd["1.bias"].abs().sum() > 0
    again = perturbed_state_dict(ref, seed=3, keep=lambda k: k == "0.bias",
                                 override=lambda k, v, g: torch.full_like(v, 7.0) if k == "0.weight" else None)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    rs = random_state({"norm.weight": (5,), "proj.weight": (3, 5)}, seed=1)
    assert (rs["norm.weight"] - 1).abs().max() < 0.2 and rs["proj.weight"].abs().max() < 0.2
    assert torch.equal(rs["proj.weight"], random_state({"norm.weight": (5,), "proj.weight": (3, 5)}, seed=1)["proj.weight"])


def test_random_weights_are_marked_random_in_meta_and_manifest_and_kept_once(tmp_path):
    pytest.importorskip("torch")
    import json

    from rs_embed_core.api import get_embedding
    from rs_embed_core.export import export_batch
    from rs_embed_core.specs import PointBuffer, TemporalSpec
    from rs_embed_core.testing import FakeProvider, random_weights, registered

    strict, _ = _torch_embedders()
    roi, when = PointBuffer(121.5, 31.2, 160), TemporalSpec.range("2022-06-01", "2022-09-01")
    with registered(strict), random_weights("kit-test-torch", None, tmp_path / "cache") as spec:
        emb = get_embedding("kit-test-torch", roi, when, backend=FakeProvider(), device="cpu")
        res = export_batch([roi], when, ["kit-test-torch"], tmp_path / "out", backend=FakeProvider(), device="cpu",
                           progress=False)
    assert spec.repo_id == "random-weights/acme.kit-net"
    assert emb.meta["weights"]["repo_id"] == "random-weights/acme.kit-net"
    manifest = json.loads((res.out / "manifest.json").read_text())
    assert manifest["models"]["kit-test-torch"]["weights"]["repo_id"] == "random-weights/acme.kit-net"

    def big_files():  # weights files other than the probe's (one unknown key), wherever they are
        return sorted(p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix == ".safetensors"
                      and "rs_embed_probe" not in p.read_bytes()[:200].decode("latin-1"))

    files = big_files()
    assert len(files) == 1 and files[0].parent.parent.name == "snapshots", files  # one copy: the Hub's
    stamp = files[0].stat().st_mtime_ns
    with registered(strict), random_weights("kit-test-torch", None, tmp_path / "cache") as again:
        assert again == spec  # the same model, variant and seed: the same file, served again, not rewritten
    assert big_files() == files and files[0].stat().st_mtime_ns == stamp
    with registered(strict), random_weights("kit-test-torch", None, tmp_path / "cache", seed=1) as other:
        assert other.revision != spec.revision and other.sha256 != spec.sha256
