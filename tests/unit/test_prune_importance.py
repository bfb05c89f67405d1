"""Importance criteria as pure functions, on small hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress.structured import importance as imp


def _attn(n_kv=2, n_rep=2, d=1, h=2):
    """q (n_kv*n_rep*d, h), k/v (n_kv*d, h), o (h, n_kv*n_rep*d) filled with distinct values."""
    q = torch.arange(n_kv * n_rep * d * h, dtype=torch.float32).reshape(-1, h)
    k = torch.full((n_kv * d, h), 10.0)
    v = torch.full((n_kv * d, h), 100.0)
    o = torch.arange(h * n_kv * n_rep * d, dtype=torch.float32).reshape(h, -1)
    return q, k, v, o


def test_attention_group_sums_follow_gqa_coupling():
    q, k, v, o = _attn()  # 2 KV groups, 2 query heads each, head_dim 1, hidden 2
    got = imp.attention_group_sums(q, k, v, o, n_kv=2)
    # group 0: q rows 0-1 (0+1+2+3), k row 0 (20), v row 0 (200), o columns 0-1 (0+1+4+5)
    # group 1: q rows 2-3 (4+5+6+7), k row 1, v row 1, o columns 2-3 (2+3+6+7)
    assert got.tolist() == [6 + 20 + 200 + 10, 22 + 20 + 200 + 18]
    qb = torch.tensor([1.0, 1.0, 0.0, 0.0])
    got_b = imp.attention_group_sums(q, k, v, o, n_kv=2, q_bias=qb)
    assert (got_b - got).tolist() == [2.0, 0.0]


def test_mlp_channel_sums_rows_and_columns():
    gate = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])  # (ff=3, hidden=2)
    up = torch.ones(3, 2)
    down = torch.tensor([[1.0, 0.0, 5.0], [1.0, 0.0, 5.0]])  # (hidden=2, ff=3)
    assert imp.mlp_channel_sums(gate, up, down).tolist() == [3 + 2 + 2, 7 + 2 + 0, 0 + 2 + 10]


def test_taylor_is_abs_weight_times_grad_summed_over_the_group():
    w = {"gate": torch.tensor([[1.0, -2.0]]), "up": torch.tensor([[3.0, 0.5]]), "down": torch.tensor([[2.0], [-1.0]])}
    g = {"gate": torch.tensor([[0.5, 0.5]]), "up": torch.tensor([[-1.0, 4.0]]), "down": torch.tensor([[1.0], [1.0]])}
    # |1*.5| + |-2*.5| + |3*-1| + |.5*4| + |2*1| + |-1*1| = .5 + 1 + 3 + 2 + 2 + 1
    assert imp.taylor_mlp(w, g).tolist() == [9.5]
    assert imp.taylor_elementwise(torch.tensor([-2.0]), torch.tensor([3.0])).tolist() == [6.0]
    with pytest.raises(ValueError):
        imp.taylor_elementwise(torch.zeros(2), torch.zeros(3))


def test_magnitude_is_l2_norm_of_the_whole_group():
    q, k, v, o = _attn()
    w = {"q": q, "k": k, "v": v, "o": o}
    sq = imp.attention_group_sums(q**2, k**2, v**2, o**2, n_kv=2)
    torch.testing.assert_close(imp.magnitude_attention(w, n_kv=2), sq.sqrt())
    m = {"gate": torch.tensor([[3.0], [0.0]]), "up": torch.tensor([[0.0], [0.0]]), "down": torch.tensor([[4.0, 1.0]])}
    assert imp.magnitude_mlp(m).tolist() == [5.0, 1.0]


def test_fluctuation_is_variance_times_squared_column_norm():
    var = torch.tensor([1.0, 2.0])
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # column norms^2: 10, 20
    assert imp.fluctuation(var, w).tolist() == [10.0, 40.0]
    with pytest.raises(ValueError):
        imp.fluctuation(torch.ones(3), w)


def test_running_moments_match_torch_mean_and_var():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 4, generator=g), torch.randn(3, 4, generator=g)
    mom = imp.update_moments(imp.update_moments(None, a), b)
    mean, var = imp.mean_and_variance(mom)
    allx = torch.cat([a.reshape(-1, 4), b]).double()
    torch.testing.assert_close(mean, allx.mean(0))
    torch.testing.assert_close(var, allx.var(0))


def test_bias_compensation_keeps_the_mean_output():
    # inputs whose channel 1 is constant: removing it with compensation changes nothing at all
    x = torch.tensor([[1.0, 3.0, -1.0], [2.0, 3.0, 0.0], [0.0, 3.0, 4.0]])
    w = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]])
    mean, _ = imp.mean_and_variance(imp.update_moments(None, x))
    b = imp.compensation_bias(w, mean, torch.tensor([1]))
    kept = torch.tensor([0, 2])
    torch.testing.assert_close(x[:, kept] @ w[:, kept].T + b, x @ w.T)
    # in general the mean output is kept exactly
    b2 = imp.compensation_bias(w, mean, torch.tensor([0, 1]))
    torch.testing.assert_close((x[:, [2]] @ w[:, [2]].T + b2).mean(0), (x @ w.T).mean(0))


def test_standardize_and_group_mean():
    z = imp.standardize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert abs(float(z.mean())) < 1e-12 and abs(float(z.std()) - 1) < 1e-12
    assert imp.standardize(torch.tensor([2.0, 2.0])).tolist() == [0.0, 0.0]
    assert imp.group_mean(torch.tensor([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [2.0, 6.0]


def test_cosine_similarity_sum():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (batch 1, seq 2, hidden 2)
    assert imp.cosine_similarity_sum(x, 3 * x) == pytest.approx((2.0, 2))
    assert imp.cosine_similarity_sum(x, -x)[0] == pytest.approx(-2.0)
    s, n = imp.cosine_similarity_sum(x, torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
    assert (s, n) == (pytest.approx(1.0), 2)
