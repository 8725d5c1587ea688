"""Weights: resolution (override dir, offline HF cache), sha256, safe loading, conversion, strict loading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from huggingface_hub import constants as hf_constants  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import rs_embed_core.weights as W  # noqa: E402
from rs_embed_core.card import WeightsSpec  # noqa: E402
from rs_embed_core.errors import WeightsError  # noqa: E402

REPO = "acme/tiny-net"
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Offline huggingface_hub reading only tmp_path/hub; rs-embed cache under tmp_path/rs.

    huggingface_hub copies HF_HUB_OFFLINE / HF_HUB_CACHE into `constants` at import, so the
    constants are patched as well as the environment.
    """
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("RS_EMBED_CACHE", str(tmp_path / "rs"))
    monkeypatch.delenv("RS_EMBED_WEIGHTS_DIR", raising=False)
    return cache


def put_in_cache(cache: Path, filename: str, data: bytes, repo: str = REPO, rev: str = REV) -> Path:
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    dest = root / "snapshots" / rev / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    return dest


def spec_for(data: bytes, filename: str = "model.safetensors", repo: str = REPO) -> WeightsSpec:
    return WeightsSpec(repo, REV, filename, hashlib.sha256(data).hexdigest(), "test")


def st_bytes(tmp_path: Path, tensors: dict) -> bytes:
    p = tmp_path / "tmp.safetensors"
    save_file(tensors, str(p))
    return p.read_bytes()


# --------------------------------------------------------------------------- resolving


def test_found_in_offline_cache(hub):
    data = b"weights-bytes"
    put_in_cache(hub, "model.safetensors", data)
    path = W.weights_file(spec_for(data))
    assert path.read_bytes() == data
    assert hub in path.resolve().parents


def test_sha_mismatch_names_expected_got_and_path(hub):
    data = b"the real file"
    put_in_cache(hub, "model.safetensors", b"a corrupted file")
    spec = spec_for(data)
    with pytest.raises(WeightsError) as ei:
        W.weights_file(spec)
    msg = str(ei.value)
    assert spec.sha256 in msg
    assert hashlib.sha256(b"a corrupted file").hexdigest() in msg
    assert "model.safetensors" in msg and str(hub) in msg


def test_offline_and_missing_is_one_clear_error(hub):
    spec = spec_for(b"x", filename="ckpt/encoder.pt")
    with pytest.raises(WeightsError) as ei:
        W.weights_file(spec)
    err = ei.value
    msg = str(err)
    for part in (REPO, "ckpt/encoder.pt", REV, "HF_HUB_OFFLINE", "RS_EMBED_WEIGHTS_DIR", spec.sha256):
        assert part in msg, part
    expected_place = hub / "models--acme--tiny-net" / "snapshots" / REV / "ckpt" / "encoder.pt"
    assert str(expected_place) in msg
    assert "acme__tiny-net/ckpt/encoder.pt" in msg
    assert err.__cause__ is None and err.__suppress_context__  # one error, not a huggingface_hub traceback


def test_env_offline_without_constant_is_still_offline(hub, monkeypatch):
    # a notebook that sets os.environ["HF_HUB_OFFLINE"] after huggingface_hub was imported
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsError, match="offline"):
        W.weights_file(spec_for(b"x"))


def test_weights_dir_override_wins_over_cache(hub, tmp_path, monkeypatch):
    local = b"local copy"
    put_in_cache(hub, "model.safetensors", b"hub copy")
    d = tmp_path / "weights"
    (d / "acme__tiny-net").mkdir(parents=True)
    (d / "acme__tiny-net" / "model.safetensors").write_bytes(local)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(d))
    assert W.weights_file(spec_for(local)) == d / "acme__tiny-net" / "model.safetensors"


def test_weights_dir_flat_layout_and_fallback_to_cache(hub, tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"flat")
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(d))
    assert W.weights_file(spec_for(b"flat")) == d / "model.safetensors"

    put_in_cache(hub, "other.safetensors", b"only in hub")
    path = W.weights_file(spec_for(b"only in hub", filename="other.safetensors"))
    assert path.read_bytes() == b"only in hub" and hub in path.resolve().parents


def test_weights_dir_file_with_wrong_hash_is_refused(hub, tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"stale")
    put_in_cache(hub, "model.safetensors", b"good")
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(d))
    with pytest.raises(WeightsError, match="sha256 mismatch") as ei:
        W.weights_file(spec_for(b"good"))
    assert str(d / "model.safetensors") in str(ei.value)


@pytest.mark.parametrize(
    "repo, filename",
    [
        (REPO, "../secret.safetensors"),
        (REPO, "sub/../../secret.safetensors"),
        (REPO, "/etc/passwd"),
        (REPO, "sub\\x.safetensors"),
        (REPO, ".hidden.safetensors"),
        (REPO, "bad name.safetensors"),
        ("acme/..", "model.safetensors"),
        ("../acme", "model.safetensors"),
        ("acme", "model.safetensors"),
        ("acme/x/y", "model.safetensors"),
    ],
)
def test_unsafe_names_are_rejected_before_any_lookup(hub, tmp_path, monkeypatch, repo, filename):
    d = tmp_path / "weights" / "inner"
    d.mkdir(parents=True)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(d))
    (tmp_path / "weights" / "secret.safetensors").write_bytes(b"outside")
    spec = WeightsSpec(repo, REV, filename, hashlib.sha256(b"outside").hexdigest(), "test")
    with pytest.raises(WeightsError, match="unsafe|repo_id|relative"):
        W.weights_file(spec)


def test_verified_file_is_not_rehashed_until_it_changes(hub, monkeypatch):
    data = b"big file"
    path = put_in_cache(hub, "model.safetensors", data)
    hashed = []
    real = W._sha256
    monkeypatch.setattr(W, "_sha256", lambda p: hashed.append(p) or real(p))
    spec = spec_for(data)
    W.weights_file(spec)
    W.weights_file(spec)
    assert len(hashed) == 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # touched: prove it again
    W.weights_file(spec)
    assert len(hashed) == 2
    path.write_bytes(b"big fil3")  # same size, new content and mtime: the record must not hide it
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.weights_file(spec)


# --------------------------------------------------------------------------- loading


def test_safetensors_loads(hub, tmp_path):
    t = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)}
    data = st_bytes(tmp_path, t)
    put_in_cache(hub, "model.safetensors", data)
    sd = W.load_state_dict(spec_for(data))
    assert sd.keys() == t.keys()
    assert all(torch.equal(sd[k], t[k]) for k in t)


def _pt_bytes(tmp_path: Path, obj) -> bytes:
    p = tmp_path / "obj.pt"
    torch.save(obj, p)
    return p.read_bytes()


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_pickle_checkpoint_is_unwrapped(hub, tmp_path, wrapper):
    t = {"enc.w": torch.randn(3, 2), "enc.b": torch.randn(3)}
    obj = t if wrapper is None else {wrapper: t, "epoch": 7, "optimizer": {"lr": 0.1}}
    data = _pt_bytes(tmp_path, obj)
    put_in_cache(hub, "ckpt.pth", data)
    sd = W.load_state_dict(spec_for(data, "ckpt.pth"))
    assert sd.keys() == t.keys()
    assert all(torch.equal(sd[k], t[k]) for k in t)


class CustomThing:
    def __init__(self):
        self.value = 3


class Evil:
    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # runs on unpickling, unless weights_only refuses it


def test_pickle_with_custom_class_is_refused(hub, tmp_path):
    data = _pt_bytes(tmp_path, {"w": torch.zeros(2), "extra": CustomThing()})
    put_in_cache(hub, "ckpt.pt", data)
    with pytest.raises(WeightsError, match="refused to unpickle"):
        W.load_state_dict(spec_for(data, "ckpt.pt"))


def test_pickle_payload_never_executes(hub, tmp_path):
    evil = Evil()
    evil.marker = str(tmp_path / "pwned")
    data = _pt_bytes(tmp_path, {"w": torch.zeros(2), "x": evil})
    put_in_cache(hub, "ckpt.bin", data)
    with pytest.raises(WeightsError, match="refused to unpickle"):
        W.load_state_dict(spec_for(data, "ckpt.bin"))
    assert not (tmp_path / "pwned").exists()


def test_pickle_without_tensors_is_an_error(hub, tmp_path):
    data = _pt_bytes(tmp_path, {"epoch": 3, "notes": "x"})
    put_in_cache(hub, "ckpt.pt", data)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        W.load_state_dict(spec_for(data, "ckpt.pt"))


def test_pickle_converted_to_safetensors_once(hub, tmp_path, monkeypatch):
    t = {"layer.weight": torch.randn(4, 4)}
    data = _pt_bytes(tmp_path, {"state_dict": t})
    put_in_cache(hub, "ckpt.ckpt", data)
    spec = spec_for(data, "ckpt.ckpt")
    loads = []
    real = torch.load

    def counting_load(*a, **k):
        loads.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", counting_load)
    first = W.load_state_dict(spec)
    converted = tmp_path / "rs" / "converted" / f"{spec.sha256}.safetensors"
    assert converted.is_file()
    second = W.load_state_dict(spec)
    assert loads == [True]  # one torch.load, with weights_only=True
    assert torch.equal(first["layer.weight"], t["layer.weight"])
    assert torch.equal(second["layer.weight"], t["layer.weight"])


def test_tied_weights_survive_conversion(hub, tmp_path):
    shared = torch.randn(3, 3)
    data = _pt_bytes(tmp_path, {"a": shared, "b": shared, "c": shared.t()})
    put_in_cache(hub, "tied.pt", data)
    spec = spec_for(data, "tied.pt")
    W.load_state_dict(spec)
    sd = W.load_state_dict(spec)  # from the converted file
    assert torch.equal(sd["a"], shared) and torch.equal(sd["b"], shared) and torch.equal(sd["c"], shared.t())


def test_unsupported_format(hub):
    with pytest.raises(WeightsError, match="unsupported weights format"):
        W.load_state_dict(spec_for(b"x", "model.onnx"))


# --------------------------------------------------------------------------- strict_load


class Enc(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)


def _sd(module):
    return {k: torch.randn_like(v) for k, v in module.state_dict().items()}


def test_strict_load_drops_and_strips():
    m = Enc()
    sd = {f"module.{k}": v for k, v in _sd(m).items()}
    sd["module.head.weight"] = torch.zeros(2)
    sd["module.decoder.block.0.w"] = torch.zeros(2)
    sd["module.decoderx"] = torch.zeros(2)
    W.strict_load(m, sd, drop=("head", "decoder.", "decoderx"), strip_prefix="module.")
    assert torch.equal(m.proj.weight, sd["module.proj.weight"])


def test_strict_load_drop_is_exact_or_subtree_not_substring():
    m = Enc()
    sd = {**_sd(m), "header.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="header.weight"):
        W.strict_load(m, sd, drop=("head",))


def test_strict_load_reports_missing_unexpected_and_shapes():
    m = Enc()
    sd = _sd(m)
    del sd["norm.bias"]
    sd["proj.weight"] = torch.zeros(5, 3)
    sd["extra.w"] = torch.zeros(1)
    before = m.proj.weight.clone()
    with pytest.raises(WeightsError) as ei:
        W.strict_load(m, sd)
    msg = str(ei.value)
    assert "missing keys (1): [norm.bias]" in msg
    assert "unexpected keys (1): [extra.w]" in msg
    assert "proj.weight: file (5, 3) vs model (4, 3)" in msg
    assert ei.value.missing == ["norm.bias"] and ei.value.unexpected == ["extra.w"]
    assert ei.value.expected["proj.weight"] == ((4, 3), "torch.float32")
    assert torch.equal(m.proj.weight, before)  # nothing half-loaded


def test_strict_load_truncates_long_lists():
    m = Enc()
    sd = {**_sd(m), **{f"junk.{i}": torch.zeros(1) for i in range(40)}}
    with pytest.raises(WeightsError) as ei:
        W.strict_load(m, sd)
    msg = str(ei.value)
    assert "unexpected keys (40)" in msg and "(+28 more)" in msg and "junk.39" not in msg
    assert len(ei.value.unexpected) == 40


# --------------------------------------------------------------------------- integrity (hardening issue)


def test_same_size_replacement_with_restored_mtime_is_rehashed(hub):
    data = b"good weights"
    path = put_in_cache(hub, "model.safetensors", data)
    spec = spec_for(data)
    W.weights_file(spec)  # verified and recorded
    st = path.stat()
    path.write_bytes(b"evil weights")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored: only ctime tells
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.weights_file(spec)


def _pt_checkpoint(hub: Path, tmp_path: Path) -> tuple[WeightsSpec, Path, dict]:
    sd = {"w": torch.arange(4, dtype=torch.float32)}
    p = tmp_path / "src.pt"
    torch.save(sd, p)
    data = p.read_bytes()
    cached = put_in_cache(hub, "model.pt", data)
    return spec_for(data, "model.pt"), cached, sd


def test_converted_file_is_bound_to_its_conversion_record(hub, tmp_path):
    spec, cached, sd = _pt_checkpoint(hub, tmp_path)
    assert torch.equal(W.load_state_dict(spec)["w"], sd["w"])
    converted = Path(os.environ["RS_EMBED_CACHE"]) / "converted" / f"{spec.sha256}.safetensors"
    assert converted.is_file() and converted.with_suffix(".json").is_file()
    cached.unlink()  # the source is gone: an intact conversion is still trusted (it was verified)
    assert torch.equal(W.load_state_dict(spec)["w"], sd["w"])
    save_file({"w": torch.full((4,), 666.0)}, str(converted))  # tampered conversion, source gone
    with pytest.raises(WeightsError, match="not available"):  # refused, and no source to convert again
        W.load_state_dict(spec)


def test_tampered_conversion_is_redone_from_the_verified_source(hub, tmp_path):
    spec, _, sd = _pt_checkpoint(hub, tmp_path)
    W.load_state_dict(spec)
    converted = Path(os.environ["RS_EMBED_CACHE"]) / "converted" / f"{spec.sha256}.safetensors"
    save_file({"w": torch.full((4,), 666.0)}, str(converted))
    assert torch.equal(W.load_state_dict(spec)["w"], sd["w"])


def test_published_sha256_prefix_is_checked(hub):
    data = b"torchgeo style"
    put_in_cache(hub, "model.safetensors", data)
    digest = hashlib.sha256(data).hexdigest()
    assert W.weights_file(WeightsSpec(REPO, REV, "model.safetensors", digest[:8], "test")).is_file()
    with pytest.raises(WeightsError, match="prefix"):
        W.weights_file(WeightsSpec(REPO, REV, "model.safetensors", "deadbeef", "test"))
    with pytest.raises(Exception, match="at least 8"):
        WeightsSpec(REPO, REV, "model.safetensors", digest[:7], "test")


def test_your_own_checkpoint_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("RS_EMBED_CACHE", str(tmp_path / "rs"))
    p = tmp_path / "finetuned.safetensors"
    save_file({"w": torch.ones(2)}, str(p))
    spec = W.local_weights(p)
    assert spec.path == str(p.resolve()) and spec.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert torch.equal(W.load_state_dict(spec)["w"], torch.ones(2))
    save_file({"w": torch.zeros(2)}, str(p))  # changed after it was pinned
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.load_state_dict(spec)
    with pytest.raises(WeightsError, match="not found"):
        W.local_weights(tmp_path / "missing.pt")


def test_unreachable_hub_fails_fast_with_the_placement_error(tmp_path, monkeypatch):
    """Not offline, nothing cached, and the Hub endpoint refuses connections: one error, no retries."""
    import socket
    import time

    from huggingface_hub import constants as hfc

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setattr(hfc, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("RS_EMBED_CACHE", str(tmp_path / "rs"))
    monkeypatch.delenv("RS_EMBED_WEIGHTS_DIR", raising=False)
    W._hub_reachable.clear()
    start = time.monotonic()
    with pytest.raises(WeightsError, match="cannot be reached") as ei:
        W.weights_file(spec_for(b"x"))
    assert time.monotonic() - start < 10 and "hf download" in str(ei.value)
    status = W.weights_status(spec_for(b"x"))
    assert status["present"] is False and "models--acme--tiny-net" in status["hf_cache"]


@pytest.mark.parametrize("source", ["converted", "safetensors"])
def test_loaded_tensors_do_not_follow_an_in_place_rewrite_of_their_file(hub, tmp_path, source):
    if source == "converted":
        spec, _, sd = _pt_checkpoint(hub, tmp_path)
        W.load_state_dict(spec)  # converts
        path = Path(os.environ["RS_EMBED_CACHE"]) / "converted" / f"{spec.sha256}.safetensors"
    else:
        path = tmp_path / "own.safetensors"
        save_file({"w": torch.arange(4.0)}, str(path))
        spec = W.local_weights(path)
    got = W.load_state_dict(spec)["w"]
    before = got.clone()
    raw = path.read_bytes()
    with open(path, "r+b") as f:  # same bytes, the tensor payload (at the end) overwritten in place
        f.seek(len(raw) - 16)
        f.write(b"\xff" * 16)
    assert torch.equal(got, before)


