"""N:M and unstructured masks (magnitude, Wanda) as pure functions on small tensors."""

from __future__ import annotations

import itertools

import pytest
import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.errors import EdgepruneError
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _w(shape=(6, 16), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (1, 2), (3, 4)])
def test_nm_mask_keeps_exactly_n_per_group(n, m):
    keep = mk.nm_mask(mk.magnitude_scores(_w((5, 32))), n, m)
    per_group = keep.reshape(5, 32 // m, m).sum(-1)
    assert (per_group == n).all()
    assert mk.satisfies_nm(keep, n, m)


def test_nm_mask_keeps_the_largest_in_each_group():
    w = _w((4, 8))
    keep = mk.nm_mask(w.abs(), 2, 4)
    for r, g in itertools.product(range(4), range(2)):
        grp = w[r, 4 * g : 4 * g + 4].abs()
        kept = set(torch.nonzero(keep[r, 4 * g : 4 * g + 4]).flatten().tolist())
        assert kept == set(torch.topk(grp, 2).indices.tolist())


def test_nm_mask_ties_go_to_the_lower_column():
    keep = mk.nm_mask(torch.ones(1, 4), 2, 4)
    assert keep.tolist() == [[True, True, False, False]]


def test_wanda_equals_magnitude_when_activations_are_uniform():
    w = _w((8, 16))
    uniform = torch.full((16,), 3.7)
    assert torch.equal(mk.nm_mask(mk.wanda_scores(w, uniform), 2, 4), mk.nm_mask(mk.magnitude_scores(w), 2, 4))
    assert torch.equal(mk.unstructured_mask(mk.wanda_scores(w, uniform), 0.5), mk.unstructured_mask(w.abs(), 0.5))


def test_wanda_scores_weigh_columns_by_input_norm():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    norm = torch.tensor([1.0, 4.0, 2.0, 3.0])
    assert torch.equal(mk.wanda_scores(w, norm), norm[None])
    assert mk.nm_mask(mk.wanda_scores(w, norm), 2, 4).tolist() == [[False, True, False, True]]
    with pytest.raises(ValueError):
        mk.wanda_scores(w, torch.ones(3))


def test_unstructured_mask_prunes_the_fraction_per_row_or_globally():
    s = _w((4, 20)).abs()
    keep = mk.unstructured_mask(s, 0.3)
    assert (keep.sum(1) == 14).all()
    glob = mk.unstructured_mask(s, 0.5, per_row=False)
    assert int(glob.sum()) == 40
    assert s[glob].min() >= s[~glob].max()


@pytest.mark.parametrize("bad", ["4:4", "5:4", "0:4", "2:1", "2-4", "half"])
def test_parse_pattern_rejects_bad_patterns(bad):
    with pytest.raises(EdgepruneError) as exc:
        mk.parse_pattern(bad)
    assert "\n" not in str(exc.value)


def test_parse_pattern_accepts_nm_and_unstructured():
    assert mk.parse_pattern("2:4") == (2, 4)
    assert mk.parse_pattern(" 4 : 8 ") == (4, 8)
    assert mk.parse_pattern("unstructured") is None


def test_a_group_that_does_not_divide_the_width_is_an_error():
    with pytest.raises(EdgepruneError, match="does not divide the input width 10"):
        mk.nm_mask(torch.ones(2, 10), 2, 4)


def test_mask_from_weight_pads_with_zero_positions_and_rejects_dense():
    w = torch.tensor([[0.0, 5.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0]])  # group 1 has one nonzero, group 2 two
    keep = mk.nm_mask_from_weight(w, 2, 4)
    assert keep.tolist() == [[True, True, False, False, True, False, True, False]]
    with pytest.raises(EdgepruneError, match="not 2:4 sparse"):
        mk.nm_mask_from_weight(torch.ones(1, 4), 2, 4)
