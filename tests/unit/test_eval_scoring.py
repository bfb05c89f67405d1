"""lm-eval's request tokenisation, context sharing and the acc / acc_norm decisions."""

from __future__ import annotations

import math

import pytest

from edgeprune.eval.scoring import (
    argmax_first,
    choice_decisions,
    common_prefix_len,
    encode_pair,
    mean_stderr,
    share_context,
    truncate_left,
)
from edgeprune.eval.tasks import MCDoc
from edgeprune.eval.zeroshot import ZeroShotConfig, score_docs, subset_indices, tokenize_docs
from tests.unit.eval_helpers import CharTokenizer, ConstantBackend


def test_acc_and_acc_norm_disagree_on_hand_computed_loglikelihoods():
    # Every token (= character) costs 1 nat. Context "Q:", choices "a" and "bbbb" with the " "
    # delimiter: ll(" a") = -2, ll(" bbbb") = -5. acc picks "a"; per character -2/1 < -5/4, so
    # acc_norm picks "bbbb" (lm-eval divides by len(choice), the delimiter not included).
    doc = MCDoc(requests=(("Q:", " a"), ("Q:", " bbbb")), gold=1, norm_lengths=(1, 4))
    backend = ConstantBackend(per_token=-1.0)
    pairs = tokenize_docs(backend.tokenizer, [doc], backend.max_length)
    for share in (True, False):
        (lls,), fed = score_docs(backend, pairs, share=share, progress=False)
        assert lls == [-2.0, -5.0]
    assert choice_decisions([-2.0, -5.0], 1, (1, 4)) == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_decisions([-2.0, -5.0], 0, (1, 4)) == {"acc": 1.0, "acc_norm": 0.0}


def test_ties_go_to_the_first_choice_like_numpy_argmax():
    assert argmax_first([-1.0, -1.0, -2.0]) == 0
    assert choice_decisions([-3.0, -3.0], 1, (3, 3)) == {"acc": 0.0, "acc_norm": 0.0}


def test_encode_pair_moves_the_contexts_trailing_space_into_the_continuation():
    tok = CharTokenizer()
    ctx, cont = encode_pair(tok.encode, "Answer: ", "yes")
    assert ctx == tok.encode("Answer:") and cont == tok.encode(" yes")
    assert encode_pair(tok.encode, "", "yes", prefix_token=0) == ([0], tok.encode("yes"))
    with pytest.raises(ValueError):
        encode_pair(tok.encode, "", "yes")


def test_encode_pair_charges_a_boundary_merge_to_the_continuation():
    # A tokenizer that merges "ab" into one token: context "xa" + continuation "b" -> whole "x","ab".
    def merging(text):
        out, i = [], 0
        while i < len(text):
            if text[i : i + 2] == "ab":
                out.append(1000)
                i += 2
            else:
                out.append(ord(text[i]))
                i += 1
        return out

    ctx, cont = encode_pair(merging, "xa", "b")
    assert ctx == [ord("x"), ord("a")]  # the context encoded alone
    assert cont == []  # whole = [x, ab]: nothing left after len(ctx) tokens, as lm-eval cuts it
    ctx, cont = encode_pair(merging, "xa", "bc")
    assert cont == [ord("c")]


def test_share_context_keeps_continuations_in_the_branches():
    same = [([1, 2, 3], [4]), ([1, 2, 3], [5, 6])]
    assert share_context(same) == ([1, 2, 3], [[4], [5, 6]])
    # WinoGrande: contexts differ after the blank, the continuation is the same
    wino = [([1, 2, 7], [9, 9]), ([1, 2, 8, 8], [9, 9])]
    assert share_context(wino) == ([1, 2], [[7, 9, 9], [8, 8, 9, 9]])
    # a common continuation start never moves into the prefix past the shortest context
    assert share_context([([1], [2, 3]), ([1], [2, 4])]) == ([1], [[2, 3], [2, 4]])
    # nothing in common: one token still forms the prefix, branches keep the rest
    assert share_context([([1, 2], [3]), ([5, 6], [7])]) == ([1], [[2, 3], [6, 7]])
    assert common_prefix_len([[1, 2], [1, 2, 3]]) == 2 and common_prefix_len([]) == 0


def test_truncate_left_cuts_the_context_only():
    assert truncate_left([1, 2, 3, 4], [5, 6], 4) == ([2, 3, 4], [5, 6])
    assert truncate_left([1, 2], [3], 8) == ([1, 2], [3])
    with pytest.raises(ValueError):
        truncate_left([1], [2, 3, 4], 2)


def test_mean_stderr_is_lm_evals_sample_stderr():
    mean, se = mean_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75
    assert se == pytest.approx(math.sqrt(0.25 / 4))  # sample variance 0.25, over n
    assert math.isnan(mean_stderr([])[0])


def test_subset_is_seeded_and_in_file_order():
    a = subset_indices(100, 10, 1234)
    assert a == sorted(a) and len(set(a)) == 10 and a == subset_indices(100, 10, 1234)
    assert a != subset_indices(100, 10, 1)
    assert subset_indices(5, 10, 1234) == [0, 1, 2, 3, 4]


def test_zero_shot_config_validates_at_construction():
    from edgeprune.errors import EdgepruneError

    assert ZeroShotConfig(tasks="arc_easy, piqa").tasks == ("arc_easy", "piqa")
    assert len(ZeroShotConfig(tasks="all").tasks) == 7
    with pytest.raises(EdgepruneError, match=r"unknown task 'arc-easy' \(did you mean 'arc_easy'"):
        ZeroShotConfig(tasks="arc-easy")
    with pytest.raises(EdgepruneError, match="limit"):
        ZeroShotConfig(tasks="piqa", limit=0)
    with pytest.raises(EdgepruneError, match="source"):
        ZeroShotConfig(tasks="piqa", source="web")
