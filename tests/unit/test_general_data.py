"""data.documents / data.general: the readers of the general corpus's formats and of a user's folders,
the seeded equal-share mix, the held-out slice, and the default source (issue 18, item 1)."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from edgeprune.data.calib import calibration_windows, check_source
from edgeprune.data.documents import (PIECE_CHARS, is_heldout, pieces, read_jsonl, read_text_file, read_wikiextractor,
                                      strip_gutenberg)  # fmt: skip
from edgeprune.data.general import (_shares, corpora, default_source, default_source_note, document_windows,
                                    general_heldout_text, general_root, heldout_documents, tokenizer_fingerprint)  # fmt: skip
from edgeprune.errors import EdgepruneError
from tests.tiny import tiny_tokenizer
from tests.unit.eval_helpers import TEST_DATA

GENERAL = TEST_DATA / "general"  # an excerpt of each format (tests/data/README.md)


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()  # byte-level: one token per byte, decodes back to the text


# -- readers ----------------------------------------------------------------------------------------------


def test_jsonl_reads_the_text_field_one_document_per_line(tmp_path):
    docs = list(read_jsonl(GENERAL / "c4" / "c4_sample.jsonl", "c4/c4_sample.jsonl"))
    assert len(docs) == 12 and docs[0].id == "c4/c4_sample.jsonl:1" and docs[11].id == "c4/c4_sample.jsonl:12"
    assert docs[0].text.startswith("Beginners BBQ Class Taking Place in Missoula!\nDo you want")
    assert "timestamp" not in docs[0].text and "klyq.com" not in docs[0].text  # the other fields are not text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "one"}\n\n{"text": ""}\n{"body": "no text field"}\n')
    records = read_jsonl(bad, "bad.jsonl")
    assert next(records).id == "bad.jsonl:1"  # the blank line and the empty text are skipped
    with pytest.raises(EdgepruneError, match=r"bad.jsonl:4 is not a JSON object with a 'text' string"):
        next(records)


def test_wikiextractor_splits_docs_and_skips_title_only_stubs():
    docs = list(read_wikiextractor(GENERAL / "wikipedia" / "AA" / "wiki_00", "wikipedia/AA/wiki_00"))
    assert len(docs) == 6  # of 60 records, 54 are a title and nothing else
    assert docs[0].id == "wikipedia/AA/wiki_00#56564559"
    assert docs[0].text.startswith("Jarred Shaw\n\nJarred Shaw (born September 28, 1990)")
    assert not any("<doc" in d.text or "</doc>" in d.text for d in docs)
    assert "Marcus Claudius Tacitus" not in {d.text.splitlines()[0] for d in docs}  # the first record is a stub


@pytest.mark.parametrize("book, first, last", [
    ("pg23.txt", "Produced by An Anonymous Volunteer", "THE END"),  # "End of the Project Gutenberg EBook", then "*** END"
    ("pg4657.txt", "This etext was produced by", "END OF VOLUME I."),  # old format: the header repeats after the text
])  # fmt: skip
def test_gutenberg_books_lose_their_license_header_and_footer(book, first, last):
    docs = list(read_text_file(GENERAL / "gutenberg" / book, f"gutenberg/{book}"))
    text = "\n\n".join(d.text for d in docs)
    assert text.startswith(first) and text.endswith(last)
    for boilerplate in ("Project Gutenberg", "PROJECT GUTENBERG", "*** START", "*** END", "SMALL PRINT", "\r"):
        assert boilerplate not in text
    assert [d.id for d in docs] == [f"gutenberg/{book}#p{i}" for i in range(len(docs))]


def test_strip_gutenberg_keeps_text_without_markers_and_pieces_cut_at_blank_lines():
    assert strip_gutenberg("just my text\n") == "just my text\n"
    book = "header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nbody\nEnd of the Project Gutenberg EBook of X\n*** END OF"
    assert strip_gutenberg(book).strip() == "body"
    paras = [f"paragraph {i} " + "x" * 700 for i in range(10)]
    cut = list(pieces("\n\n".join(paras)))
    assert all(len(p) >= PIECE_CHARS for p in cut[:-1]) and "\n\n".join(cut) == "\n\n".join(paras)


def _user_folder(root, n_docs: int = 400):
    """A user's folder: numbered documents in a .jsonl (below a sub-folder) and a .txt; a .md ignored."""
    (root / "sub").mkdir(parents=True)
    with (root / "sub" / "notes.jsonl").open("w") as f:
        for i in range(n_docs):
            f.write(json.dumps({"text": f"<d{i:04d}> " + f"w{i:04d}z " * 30}) + "\n")  # any window of it names it
    (root / "story.txt").write_text("\n\n".join(["A story of my own. " + "It goes on. " * 100] * 5))  # 3 pieces
    (root / "README.md").write_text("not read")
    return root


def test_a_folder_of_txt_and_jsonl_is_one_corpus_read_by_suffix(tmp_path, tok):
    folder = _user_folder(tmp_path / "mine", n_docs=3)
    [corpus] = corpora(folder)
    assert corpus.name == "mine" and [f.name for f in corpus.files] == ["story.txt", "notes.jsonl"]
    ids = [d.id for d in corpus.documents()]
    assert ids[:3] == ["story.txt#p0", "story.txt#p1", "story.txt#p2"] and ids[3:] == [f"sub/notes.jsonl:{i}" for i in (1, 2, 3)]
    w = calibration_windows(tok, str(folder), n_windows=4, seq_len=32)
    assert w.ids.shape == (4, 32) and w.source.startswith(str(folder))
    one = calibration_windows(tok, str(folder / "sub" / "notes.jsonl"), n_windows=2, seq_len=32)  # a .jsonl file alone
    assert "<d000" in tok.decode(one.ids[0]) + tok.decode(one.ids[1])
    check_source(str(folder))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "data.csv").write_text("a,b\n")
    with pytest.raises(EdgepruneError, match="holds no .txt or .jsonl files"):
        corpora(tmp_path / "bare")


def test_a_folder_holding_the_evaluation_set_is_refused(tmp_path, tok):
    from edgeprune.data.paths import EMBEDDED_DIR

    (tmp_path / "mine").mkdir()
    shutil.copy(EMBEDDED_DIR / "wikitext-2-raw" / "wiki.test.raw", tmp_path / "mine" / "test.txt")
    with pytest.raises(EdgepruneError, match="the evaluation set"):
        calibration_windows(tok, str(tmp_path / "mine"), n_windows=2, seq_len=32)


# -- the mix ---------------------------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_windows_and_another_seed_others(tok, cache):
    a = calibration_windows(tok, "general", n_windows=9, seq_len=64, seed=0, data_dir=TEST_DATA)
    assert a.ids.shape == (9, 64) and "c4 3, wikipedia 3, gutenberg 3 windows" in a.source  # equal shares
    assert list(cache.glob("calib/docs-general-*.pt"))  # cached
    again = document_windows(tok, GENERAL, n_windows=9, seq_len=64, seed=0, use_cache=False)
    cached = document_windows(tok, GENERAL, n_windows=9, seq_len=64, seed=0)
    other = document_windows(tok, GENERAL, n_windows=9, seq_len=64, seed=1, use_cache=False)
    assert (again.ids == a.ids).all() and (cached.ids == a.ids).all() and cached.source == a.source
    assert not (other.ids == a.ids).all()
    assert {tuple(r) for r in other.ids.tolist()} != {tuple(r) for r in a.ids.tolist()}  # not just reordered


def test_a_corpus_that_runs_out_passes_its_share_to_the_others():
    class Fixed:  # a corpus that can fill at most `cap` windows
        def __init__(self, cap):
            self.cap = cap

        def fill(self, n):
            return min(n, self.cap)

    assert _shares(9, {"a": Fixed(10), "b": Fixed(10), "c": Fixed(10)}) == {"a": 3, "b": 3, "c": 3}
    assert _shares(10, {"a": Fixed(1), "b": Fixed(100), "c": Fixed(100)}) == {"a": 1, "b": 5, "c": 4}
    assert _shares(10, {"a": Fixed(1), "b": Fixed(2), "c": Fixed(3)}) == {"a": 1, "b": 2, "c": 3}  # all there is


def test_held_out_documents_are_never_drawn(tmp_path, tok):
    folder = _user_folder(tmp_path / "mine")
    held = {d.id for d in heldout_documents(folder)["mine"]}
    ids = [d.id for d in corpora(folder)[0].documents()]
    assert held == {i for i in ids if is_heldout(i)} and 2 <= len(held) <= 20  # ~2% of 400 + 4
    marker = {i: f"w{int(i.rsplit(':', 1)[1]) - 1:04d}z" for i in ids if i.startswith("sub/")}  # line n: w(n-1)z
    assert held & set(marker)  # some numbered documents are held out
    # every window there is, under two seeds: no held-out document appears, every other one does (but
    # one that may lie in the cut-off tail)
    for seed in (0, 1):
        w = document_windows(tok, folder, n_windows=10_000, seq_len=32, seed=seed, use_cache=False)
        text = "|".join(tok.decode(row) for row in w.ids)  # "|": no marker made up across two windows
        assert not any(marker[i] in text for i in held if i in marker)
        assert sum(marker[i] not in text for i in marker if i not in held) <= 1


def test_the_general_held_out_text_is_its_held_out_documents(tmp_path):
    root = tmp_path / "data" / "general"
    for sub in ("c4", "wikipedia", "gutenberg"):
        (root / sub).mkdir(parents=True)
    _user_folder(tmp_path / "u")
    shutil.copy(tmp_path / "u" / "sub" / "notes.jsonl", root / "c4" / "web.jsonl")
    held = heldout_documents(root)
    assert set(held) == {"c4", "wikipedia", "gutenberg"} and held["c4"] and not held["wikipedia"]
    text = general_heldout_text(tmp_path / "data")
    assert text == "\n\n".join(d.text for d in held["c4"]) == general_heldout_text(tmp_path / "data", corpus="c4")
    with pytest.raises(EdgepruneError, match="no corpus 'books'"):
        general_heldout_text(tmp_path / "data", corpus="books")


# -- the source name and the default ---------------------------------------------------------------------


def test_a_missing_general_folder_is_one_line_naming_data_dir(tmp_path, tok):
    for call in (lambda: general_root(tmp_path), lambda: calibration_windows(tok, "general", n_windows=2, seq_len=8, data_dir=tmp_path)):
        with pytest.raises(EdgepruneError) as exc:
            call()
        assert "\n" not in str(exc.value) and "pass --data-dir DIR" in str(exc.value) and "general" in str(exc.value)


def test_the_default_source_is_general_where_the_data_directory_has_it(tmp_path, monkeypatch):
    assert default_source(TEST_DATA) == "general" and default_source(tmp_path) == "self"
    assert "using general" in default_source_note(TEST_DATA) and "using self" in default_source_note(tmp_path)
    monkeypatch.setenv("EDGEPRUNE_DATA", str(tmp_path))
    assert default_source() == "self"
    monkeypatch.setenv("EDGEPRUNE_DATA", str(TEST_DATA))
    assert default_source() == "general"


@pytest.mark.parametrize("data, expected", [("tests", "general"), ("empty", "self")])
def test_a_verb_left_without_calib_uses_the_default_and_says_so_in_one_line(data, expected, tmp_path, capsys):
    from edgeprune.cli.options import check_text_flags

    data_dir = str(TEST_DATA if data == "tests" else tmp_path)
    args = argparse.Namespace(calib=None, train_data=None, data_dir=data_dir)
    check_text_flags(args, {"--calib-windows": 4}, {"--calib-seq-len": 16}, trains=True)
    assert args.calib == args.train_data == expected
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("edgeprune: no --calib / --train-data given: using " + expected)
    args = argparse.Namespace(calib="general", train_data=None, data_dir=data_dir)
    if expected == "self":  # named, but not there: fails before any model is loaded
        with pytest.raises(EdgepruneError, match="pass --data-dir"):
            check_text_flags(args, {}, {})
    else:
        check_text_flags(args, {}, {})
        assert args.train_data is None and capsys.readouterr().err == ""  # prune's: follows --calib


def test_tokenizer_fingerprints_tell_tokenizers_apart(tok):
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(tiny_tokenizer())

    class Vocab:
        def get_vocab(self):
            return {"a": 0, "b": 1}

    assert tokenizer_fingerprint(Vocab()) != tokenizer_fingerprint(tok)
