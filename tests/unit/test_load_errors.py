"""Bad input to the loader and the CLI: one clear line, exit 2, nothing half-written."""

from __future__ import annotations

import json

import pytest

from edgeprune.cli.main import main
from edgeprune.errors import EdgepruneError
from edgeprune.models import load
from edgeprune.fileio import atomic_dir, is_complete
from tests.tiny import save_tiny, tiny_llama


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    return save_tiny(tiny_llama(), tmp_path_factory.mktemp("llama"))


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_unknown_name_suggests_builtin():
    with pytest.raises(EdgepruneError, match=r"unknown model 'smollm2-13m'.*did you mean 'smollm2-135m'"):
        load("smollm2-13m")


def test_missing_path():
    with pytest.raises(EdgepruneError, match="unknown model './no/such/dir'"):
        load("./no/such/dir")


def test_truncated_safetensors(saved_llama, tmp_path):
    bad = _copy(saved_llama, tmp_path / "bad")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(EdgepruneError, match="truncated or corrupt safetensors file"):
        load(bad)


def test_garbage_safetensors(saved_llama, tmp_path):
    bad = _copy(saved_llama, tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(EdgepruneError, match="corrupt safetensors file"):
        load(bad)


def test_unsupported_architecture(saved_llama, tmp_path):
    bad = _copy(saved_llama, tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgepruneError, match=r"unsupported architecture 'gpt2'.*supports llama, mistral, qwen2"):
        load(bad)


def test_invalid_per_layer_config(saved_llama, tmp_path):
    from tests.tiny import tiny_per_layer

    bad = save_tiny(tiny_per_layer(), tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_key_value_heads"] = [2, 0, 2, 2]  # layer 2 has 2 heads: fine; make it 3 -> not a multiple
    cfg["num_attention_heads"] = [4, 0, 3, 4]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgepruneError, match="invalid per-layer config.*layer 2: 3 attention heads"):
        load(bad)


def test_pickle_only_directory_is_refused(saved_llama, tmp_path):
    bad = _copy(saved_llama, tmp_path / "bad")
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(EdgepruneError, match="pickled"):
        load(bad)


def test_truncated_gguf(tmp_path):
    from gguf import GGUFWriter
    import numpy as np

    path = tmp_path / "m.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    data = path.read_bytes()
    path.write_bytes(data[:-200])
    with pytest.raises(EdgepruneError, match="(corrupt or truncated|truncated) GGUF file"):
        load(path)
    path.write_bytes(b"GGUF" + b"\xff" * 20)
    with pytest.raises(EdgepruneError, match="corrupt or truncated GGUF file"):
        load(path)


def test_unsupported_gguf_architecture(tmp_path):
    from gguf import GGUFWriter
    import numpy as np

    path = tmp_path / "m.gguf"
    w = GGUFWriter(str(path), "rwkv6")
    w.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(EdgepruneError, match="unsupported GGUF architecture 'rwkv6'"):
        load(path)


def test_hub_id_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EdgepruneError, match=r"cannot fetch 'nobody-here/no-such-model' from the Hugging Face hub"):
        load("nobody-here/no-such-model")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole.bin").write_bytes(b"x")
    assert is_complete(final) and (final / "whole.bin").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "nope-model"], "no such model or file 'nope-model'"),
        (["generate", "--model", "smollm2-1350m", "--max-new-tokens", "1"], "did you mean 'smollm2-135m'"),
        (["generate", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _tiny_dir(kind, path):
    import torch
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM

    from tests.tiny import VOCAB, _init_, tiny_mistral, tiny_qwen2

    if kind == "gemma3_text":
        cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                               max_position_embeddings=256, bos_token_id=256, eos_token_id=257, pad_token_id=258)  # fmt: skip
        torch.manual_seed(0)
        model = _init_(Gemma3ForCausalLM(cfg), 0)
    else:
        model = {"qwen2": tiny_qwen2, "mistral": tiny_mistral}[kind]()
    return model, save_tiny(model, path)


@pytest.mark.parametrize("kind", ["qwen2", "mistral", "gemma3_text"])
def test_supported_families_load_from_directories(kind, tmp_path):
    import torch

    model, path = _tiny_dir(kind, tmp_path)
    loaded = load(path)
    assert loaded.model.config.model_type == kind
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)
