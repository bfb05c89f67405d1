"""The chat examples run non-interactively on tiny exported artifacts, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")  # fmt: skip


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    from transformers import AutoTokenizer

    from edgeprune.export.gguf import export_gguf
    from edgeprune.export.onnx import export_onnx
    from tests.tiny import tiny_llama
    from tests.unit.gguf_helpers import bpe_tokenizer

    d = tmp_path_factory.mktemp("chat")
    bpe_tokenizer().save_pretrained(d / "tok")  # a private copy: the helper's tokenizer is shared
    tok = AutoTokenizer.from_pretrained(d / "tok")
    tok.chat_template = TEMPLATE
    model = tiny_llama(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=2)
    export_gguf(model, tok, d / "tiny.gguf", qtype="f16", verify=False, progress=False)
    export_onnx(model, d / "onnx", tokenizer=tok, exporter="torchscript", verify=False)
    return d


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120)


def test_gguf_template_is_carried(artifacts):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(artifacts / "tiny.gguf"), n_ctx=64, verbose=False, vocab_only=True)
    assert llm.metadata["tokenizer.chat_template"] == TEMPLATE


@pytest.mark.parametrize("example, artifact", [("chat_gguf.py", "tiny.gguf"), ("chat_onnx.py", "onnx")])
def test_chat_example_answers_one_prompt(artifacts, example, artifact):
    out = run_example(example, str(artifacts / artifact), "--prompt", "hi", "--max-tokens", "4", "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert "chat template" in out.stderr and "ChatML" not in out.stderr  # the artifact's own template was used
    assert out.stdout.strip() != "" or "tokens/s" in out.stderr  # an answer (random weights: any text) was produced


@pytest.mark.parametrize("example, artifact", [("chat_gguf.py", "tiny.gguf"), ("chat_onnx.py", "onnx")])
def test_chat_example_interactive_loop_reads_stdin(artifacts, example, artifact):
    out = subprocess.run([sys.executable, str(EXAMPLES / example), str(artifacts / artifact), "--max-tokens", "2", "--threads", "1"],
                         input="hello\nagain\n\n", capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("bot> ") == 2


@pytest.mark.parametrize("example", ["chat_gguf.py", "chat_onnx.py"])
def test_chat_example_missing_model(tmp_path, example):
    out = run_example(example, str(tmp_path / "nothing"), "--prompt", "hi")
    assert out.returncode == 2 and "export" in out.stderr
