"""Bad input to the GGUF exporter: one clear line, exit code 2 on the CLI, and no file left behind."""

from __future__ import annotations

import pytest

from edgeprune.cli.main import main
from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import export_gguf, tables
from tests.tiny import tiny_llama, tiny_per_layer, tiny_tokenizer
from tests.unit.gguf_helpers import bpe_tokenizer


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(EdgepruneError, match="already exists: pass overwrite=True") as err:
        export_gguf(tiny_llama(), None, out, progress=False)
    _one_line(err)
    assert out.read_bytes() == b"precious"
    export_gguf(tiny_llama(), None, out, qtype="f32", overwrite=True, verify=False, progress=False)
    assert out.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize(
    "where,match",
    [
        ("missing/m.gguf", "directory .*missing does not exist"),
        ("a_file/m.gguf", "a_file is a file, not a folder"),
        (".", "is a directory"),
    ],
)
def test_unusable_output_paths(tmp_path, where, match):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(EdgepruneError, match=match):
        export_gguf(tiny_llama(), None, tmp_path / where, progress=False)


def test_unwritable_directory(tmp_path):
    # /proc refuses new files even for root (whom chmod does not stop)
    with pytest.raises(EdgepruneError, match="cannot write"):
        export_gguf(tiny_llama(), None, "/proc/edgeprune-test.gguf", progress=False)


def test_unknown_type_and_a_bad_llama_quantize(tmp_path):
    with pytest.raises(EdgepruneError, match="unknown GGUF type 'q4_k_x' \\(did you mean 'q4_k_.'\\?\\)"):
        export_gguf(tiny_llama(), None, tmp_path / "m.gguf", qtype="q4_k_x", progress=False)
    with pytest.raises(EdgepruneError, match="is not an executable file"):
        export_gguf(tiny_llama(), None, tmp_path / "m.gguf", qtype="q6_k", llama_quantize=tmp_path / "nope", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_widths_that_break_llama_cpp(tmp_path):
    model = tiny_per_layer(heads=(0, 4, 2), kv=(0, 2, 1), ff=(64, 64, 64))
    with pytest.raises(EdgepruneError, match="layer 0 has no attention heads") as err:
        export_gguf(model, None, tmp_path / "m.gguf", progress=False)
    _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_architecture_that_cannot_be_mapped(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(EdgepruneError, match="cannot export 'gpt2' models to GGUF: supported are llama, mistral, qwen2"):
        export_gguf(model, None, tmp_path / "m.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_problems(tmp_path):
    with pytest.raises(EdgepruneError, match="tokenizer has 320 tokens but the model's embedding has 260 rows"):
        export_gguf(tiny_llama(), bpe_tokenizer(), tmp_path / "m.gguf", progress=False)
    with pytest.raises(EdgepruneError, match="no merges"):
        export_gguf(tiny_llama(), tiny_tokenizer(), tmp_path / "m.gguf", progress=False)
    with pytest.raises(EdgepruneError, match="source GGUF .* does not exist"):
        export_gguf(tiny_llama(), None, tmp_path / "m.gguf", source_gguf=tmp_path / "none.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("qtype", ["f32", "q8_0"])
def test_failed_verification_leaves_nothing(tmp_path, monkeypatch, qtype):
    monkeypatch.setattr(tables, "LAYOUT_RTOL", -1.0)  # no file can pass
    with pytest.raises(EdgepruneError, match="GGUF verification failed, nothing written: llama.cpp does not compute") as err:
        export_gguf(tiny_llama(), None, tmp_path / "m.gguf", qtype=qtype, progress=False)
    _one_line(err)
    assert list(tmp_path.iterdir()) == []  # neither the file, its F32 rendering nor a report


def test_a_wrong_layout_is_caught(tmp_path, monkeypatch):
    """Without the Q/K permutation the file loads but computes something else: verification says so."""
    from edgeprune.export.gguf import writer

    monkeypatch.setattr(writer, "permute_qk", lambda w, n_head: w)
    with pytest.raises(EdgepruneError, match="the layout is wrong"):
        export_gguf(tiny_llama(), None, tmp_path / "m.gguf", qtype="f16", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, exc):
    from edgeprune.export.gguf import writer

    calls = []

    def failing_encode(arr, ggml):
        calls.append(1)
        if len(calls) == 3:
            raise exc
        return real(arr, ggml)

    real = writer._encode
    monkeypatch.setattr(writer, "_encode", failing_encode)
    with pytest.raises((EdgepruneError, KeyboardInterrupt)):
        export_gguf(tiny_llama(), None, tmp_path / "m.gguf", qtype="f16", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_llama_cpp_crash_is_contained(tmp_path):
    """A SentencePiece vocabulary without byte tokens makes llama.cpp abort the process it runs in;
    the exporter runs llama.cpp in a child process and reports the crash as one line."""
    from gguf import GGUFValueType as V

    from edgeprune.export.gguf.llamacpp import run_in_child
    from edgeprune.export.gguf.spec import model_spec
    from edgeprune.export.gguf.vocab import KV
    from edgeprune.export.gguf.writer import write_gguf

    model = tiny_llama()
    kvs = (
        KV("tokenizer.ggml.model", "llama", V.STRING),
        KV("tokenizer.ggml.tokens", [f"t{i}" for i in range(260)], V.ARRAY, V.STRING),
        KV("tokenizer.ggml.scores", [0.0] * 260, V.ARRAY, V.FLOAT32),
        KV("tokenizer.ggml.token_type", [1] * 260, V.ARRAY, V.INT32),
    )
    path = tmp_path / "bad.gguf"
    write_gguf(path, model, model_spec(model), tables.QTYPES["f32"], kvs, progress=False)
    with pytest.raises(EdgepruneError, match="llama.cpp (crashed|cannot load)") as err:
        run_in_child([path], [[1, 2, 3]], ["hello\nworld"], n_ctx=32, n_threads=1)  # llama.cpp aborts on the newline
    _one_line(err)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "m.gguf"
    out.write_text("x")
    assert main(["export", "gguf", "--model", "smollm2-135m", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeprune: error: output") and "--overwrite" in err and "\n" not in err
    assert main(["export", "gguf", "--type", "q9_9", "--out", str(tmp_path / "n.gguf")]) == 2
    assert "unknown GGUF type 'q9_9'" in capsys.readouterr().err
    assert main(["export", "gguf", "--model", str(tmp_path / "no_such_dir"), "--out", str(tmp_path / "n.gguf")]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["export"])  # a format is required
    assert exit_.value.code == 2


def test_cli_exports_a_saved_model(tmp_path, capsys):
    model_dir = tmp_path / "model"
    tok = bpe_tokenizer()
    tiny_llama(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=2).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "m.gguf"
    assert main(["export", "gguf", "--model", str(model_dir), "--type", "q8_0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: llama, q8_0" in text and "tokenization identical on" in text
    assert (tmp_path / "m.report.json").is_file()


def test_output_gets_ordinary_permissions(tmp_path):
    import os

    export_gguf(tiny_llama(), None, tmp_path / "m.gguf", qtype="f32", verify=False, progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.gguf", "m.report.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
