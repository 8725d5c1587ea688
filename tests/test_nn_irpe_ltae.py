"""rs_embed_core.nn: contextual iRPE on keys (buckets, lookup, first-head term), the L-TAE, days of year."""

from __future__ import annotations

import datetime as dt

import pytest

torch = pytest.importorskip("torch")

from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.nn import LTAE, ContextualRPE, days_of_year, irpe_bucket_count, irpe_buckets  # noqa: E402


def test_irpe_bucket_count_and_class_bucket():
    assert irpe_bucket_count(1.9, skip=1) == 8 and irpe_bucket_count(1.9, skip=0) == 7
    assert irpe_bucket_count(2.5, skip=0) == 11  # int(beta) = 5
    b = irpe_buckets(2, 3, skip=2)
    assert b.shape == (8, 8) and (b[:2] == 7).all() and (b[:, :2] == 7).all()
    assert torch.equal(b[2:, 2:], b[2:, 2:].T)  # distances are symmetric
    with pytest.raises(SpecError):
        irpe_buckets(0, 3)


def test_contextual_rpe_is_a_per_bucket_dot_product():
    rpe = ContextualRPE(head_dim=4, heads=1)
    with torch.no_grad():
        rpe.lookup_table_weight.copy_(torch.randn(1, 4, 8))
    q = torch.randn(2, 3, 5, 4)  # 1 class token + a 2 x 2 grid
    buckets = irpe_buckets(2, 2)
    out = rpe(q, buckets)
    i, j = 3, 2
    want = q[:, :, i] @ rpe.lookup_table_weight[0, :, buckets[i, j]]
    assert out.shape == (2, 3, 5, 5) and torch.allclose(out[:, :, i, j], want, atol=1e-6)
    first = ContextualRPE(4, 1, first_head_only=True)
    first.load_state_dict(rpe.state_dict())
    got = first(q, buckets)
    assert got.shape == (2, 1, 5, 5) and torch.allclose(got[:, 0], out[:, 0])  # head 0's term, for every head
    with pytest.raises(SpecError, match="buckets cover"):
        rpe(q, irpe_buckets(3, 3))


def _ltae(in_norm=True) -> LTAE:
    torch.manual_seed(0)
    net = LTAE(3, heads=4, d_k=2, mlp_in=[8, 16], mlp=[16], period=367, in_norm=in_norm).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_ltae_layout_and_date_dependence():
    net = _ltae()
    names = {k.rsplit(".", 1)[0] if k.endswith((".weight", ".bias")) else k for k in net.state_dict()}
    assert names == {"inconv.0", "inconv.1", "inconv.4", "inconv.5", "in_norm", "attention_heads.Q",
                     "attention_heads.fc1_k", "mlp.0", "mlp.1", "out_norm"}  # the authors' indices (dropout slots)
    assert "in_norm.weight" not in _ltae(in_norm=False).state_dict()
    x, days = torch.randn(6, 4, 3), torch.tensor([[10.0, 50.0, 200.0, 300.0]] * 6)
    with torch.no_grad():
        out = net(x, days)
        perm = torch.tensor([2, 0, 3, 1])
        assert out.shape == (6, 16)
        assert torch.allclose(net(x[:, perm], days[:, perm]), out, atol=1e-6)  # dated frames are a set
        assert not torch.allclose(net(x, days + 30), out, atol=1e-3)
        assert torch.allclose(net(x[2:3], days[2:3]), out[2:3], atol=1e-6)  # series are independent
    with pytest.raises(SpecError, match="one day per date"):
        net(x, days[:, :3])


def test_days_of_year_count_from_zero_and_need_dates():
    assert days_of_year(((dt.date(2021, 1, 1), dt.datetime(2020, 12, 31, 23)),), "M") == [[0, 365]]
    with pytest.raises(SpecError, match="M needs the date of every frame .its day of year"):
        days_of_year(((None,),), "M")
