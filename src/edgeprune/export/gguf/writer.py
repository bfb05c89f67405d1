"""Write a torch Llama-family model into one GGUF file with gguf-py's GGUFWriter.

The writer is streamed: every tensor's name, shape and type is planned first (so the header can be
written), then tensors are converted and quantized one at a time, so peak memory is the model plus
one tensor rather than the model plus the whole file.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import tables
from edgeprune.export.gguf.layout import TypeChoice, permute_qk, tensor_type
from edgeprune.export.gguf.spec import GGUFModelSpec
from edgeprune.export.gguf.vocab import KV


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (= HF nn.Linear [out, in]); ggml lists it reversed
    choice: TypeChoice
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)  # float32, already permuted
    hf_name: str | None = None  # the model parameter it comes from; None for synthetic tensors
    n_head: int = 0  # heads its rows were permuted with (0: not permuted)


@dataclass
class WrittenFile:
    path: Path
    tensors: list[PlannedTensor]

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(t.choice.ggml.name for t in self.tensors))

    def fallbacks(self) -> list[dict]:
        return [
            {"tensor": t.name, "wanted": t.choice.wanted.name, "used": t.choice.ggml.name, "reason": t.choice.reason}
            for t in self.tensors
            if t.choice.is_fallback
        ]


def _name_patterns() -> list[tuple[re.Pattern, str]]:
    pats = [(re.compile(re.escape(hf) + "$"), gg) for hf, gg in tables.GLOBAL_TENSORS.items()]
    for hf, gg in tables.LAYER_TENSORS.items():
        rx = re.escape(hf).replace(re.escape("{bid}"), r"(?P<bid>\d+)")
        pats.append((re.compile(rx + "$"), gg))
    return pats


_PATTERNS = _name_patterns()


def gguf_name(hf_name: str) -> tuple[str, int | None]:
    """(GGUF name, layer index or None) for a Hugging Face parameter name; error if unmapped."""
    for rx, template in _PATTERNS:
        m = rx.match(hf_name)
        if m:
            bid = m.groupdict().get("bid")
            return template.format(bid=bid), (int(bid) if bid is not None else None)
    raise EdgepruneError(f"no GGUF name for tensor {hf_name!r}: the model has a weight the Llama layout does not know")


def _order(name: str) -> tuple:
    # token_embd, rope_freqs, blk.0 ... blk.N, output_norm, output: the converter's usual order
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return ({"token_embd.weight": 0, "rope_freqs.weight": 0}.get(name, 2), 0, name)


def plan_tensors(model, spec: GGUFModelSpec, qtype: tables.QType) -> list[PlannedTensor]:
    """Every tensor the file will hold, in file order, with its type (pure planning, no I/O)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    planned: dict[str, PlannedTensor] = {}

    def add(name: str, shape: tuple[int, ...], load: Callable[[], np.ndarray], hf_name=None, n_head=0) -> None:
        choice = tensor_type(name, shape, qtype, tied=spec.tied)
        planned[name] = PlannedTensor(name, shape, choice, load, hf_name, n_head)

    for hf_name, p in params.items():
        if hf_name == "lm_head.weight" and spec.tied:
            continue  # llama.cpp uses token_embd as the output matrix when output.weight is absent
        name, bid = gguf_name(hf_name)
        heads_field = next((v for k, v in tables.QK_PERMUTE.items() if name.endswith(k)), None)
        n_head = getattr(spec, heads_field)[bid] if (heads_field and spec.permute_qk) else 0

        def load(p=p, n_head=n_head):
            arr = p.detach().to("cpu").float().numpy()
            return permute_qk(arr, n_head) if n_head else arr

        add(name, tuple(p.shape), load, hf_name, n_head)

    # A layer with attention but no MLP gets a zero MLP (see ZERO_MLP_CHANNELS); its output is 0.
    h, z = spec.hidden_size, tables.ZERO_MLP_CHANNELS
    for bid in spec.plan.zero_mlp_layers:
        add(f"blk.{bid}.ffn_norm.weight", (h,), lambda: np.ones(h, dtype=np.float32))
        add(f"blk.{bid}.ffn_gate.weight", (z, h), lambda: np.zeros((z, h), dtype=np.float32))
        add(f"blk.{bid}.ffn_up.weight", (z, h), lambda: np.zeros((z, h), dtype=np.float32))
        add(f"blk.{bid}.ffn_down.weight", (h, z), lambda: np.zeros((h, z), dtype=np.float32))
    if spec.rope_freqs is not None:
        freqs = spec.rope_freqs
        add("rope_freqs.weight", tuple(freqs.shape), lambda: freqs)
    return sorted(planned.values(), key=lambda t: _order(t.name))


def _encode(arr: np.ndarray, ggml) -> np.ndarray:
    from gguf.quants import quantize

    # F32/F16: a cast; other types: uint8 blocks of shape (..., bytes per row)
    return np.ascontiguousarray(quantize(arr, ggml))


def _tensor_info(t: PlannedTensor) -> tuple[tuple[int, ...], np.dtype, int]:
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    if t.choice.ggml == GGMLQuantizationType.F32:
        return t.shape, np.dtype(np.float32), int(np.prod(t.shape)) * 4
    if t.choice.ggml == GGMLQuantizationType.F16:
        return t.shape, np.dtype(np.float16), int(np.prod(t.shape)) * 2
    byte_shape = quant_shape_to_byte_shape(t.shape, t.choice.ggml)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))


def write_gguf(
    path: Path,
    model,
    spec: GGUFModelSpec,
    qtype: tables.QType,
    tokenizer_kvs: tuple[KV, ...],
    general_kvs: tuple[KV, ...] = (),
    *,
    progress: bool | None = None,
) -> WrittenFile:
    """Write ``model`` to ``path`` (which the caller makes atomic) and return what was written."""
    from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter
    from tqdm.auto import tqdm

    tensors = plan_tensors(model, spec, qtype)
    w = GGUFWriter(str(path), spec.arch)
    try:
        for kv in general_kvs:
            w.add_key_value(kv.key, kv.value, kv.type, kv.sub_type)
        w.add_file_type(int(qtype.ftype))
        if any(t.choice.ggml not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) for t in tensors):
            w.add_quantization_version(GGML_QUANT_VERSION)
        for key, value, vtype, sub in spec.kvs():
            w.add_key_value(key, value, vtype, sub)
        for kv in tokenizer_kvs:
            w.add_key_value(kv.key, kv.value, kv.type, kv.sub_type)
        for t in tensors:
            shape, dtype, nbytes = _tensor_info(t)
            raw = None if dtype != np.uint8 else t.choice.ggml
            w.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in tqdm(tensors, desc=f"writing {qtype.name}", unit="tensor", disable=None if progress is None else not progress):
            w.write_tensor_data(_encode(t.load(), t.choice.ggml))
    except OSError as exc:
        raise EdgepruneError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        w.close()
    return WrittenFile(Path(path), tensors)
