"""The compressed artifact: only the kept values of N:M-sparse Linears (packed int4 / int8 or float),
their positions, and the quantization scales, in one safetensors file.

Layout ``edgeprune-packed`` version 1 (a directory)::

    DIR/config.json                    the model's Hugging Face config (rebuilds the architecture)
    DIR/model.packed.safetensors       the tensors below; header metadata holds the layout
    DIR/tokenizer.json ...             the tokenizer, when one is given
    DIR/report.json                    what was done, bytes and ratios (written by the caller)

Each decoder Linear ``P`` (``model.layers.3.mlp.up_proj``) is stored by one of three kinds,
recorded with its shape in the ``layout`` JSON of the safetensors metadata:

``nm`` (N:M sparse; ``K = in * N / M`` kept values per row)
    - ``P.values``: ``(out, K)`` in the weight's float dtype when not quantized, or
    - ``P.qweight``: ``(out, K)`` uint8 codes (int8), or ``(out, K / 2)`` uint8 with two 4-bit codes
      per byte, the even element in the low nibble (int4). Codes are unsigned: symmetric codes are
      shifted by ``2^(bits-1)``; dequantized ``w = (code - zero) * scale``;
    - ``P.scale``: ``(out, in / group)`` float16, one per ``group`` *dense* input columns;
    - ``P.zero``: ``(out, in / group)`` uint8 zero points (asymmetric only; symmetric zero is
      ``2^(bits-1)`` in the shifted codes);
    - ``P.meta``: the positions. **2:4**: each group of 4 keeps one of the 6 pairs
      ``(0,1) (0,2) (0,3) (1,2) (1,3) (2,3)``; the pair indices of the row-major sequence of all
      groups are packed three to a byte, ``b = p0 + 6 p1 + 36 p2`` (``6^3 = 216 <= 256``), i.e.
      0.67 bit per dense weight. Other N:M: a row-major bitmask of the dense layout, 8 weights per
      byte, least significant bit first (1 bit per dense weight, as compressed-tensors'
      ``sparse-24-bitmask`` stores 2:4). Values are in row-major order of the kept positions.
``dense`` (quantized, not sparse): ``P.qweight``, ``P.scale``, ``P.zero`` over all ``in`` columns.
``raw``: ``P.weight`` as is.

Biases are ``P.bias``; SLoRB correction ``P.slorb_L`` ``(out, in / k)`` (float16 when that is
exact) with ``slorb_k`` in the layout. Every other tensor (embedding, norms, an untied LM head) is
stored under its state-dict name, float or quantized int8 like a ``dense`` Linear. A tied LM head
is not stored.

Why not the ``compressed-tensors`` format: its 2:4 formats are a bitmask (1 bit per weight, this
layout's metadata is a third smaller, which is what takes int4 2:4 past 10x at group 64) or
Marlin-24 (a GPU kernel's tile layout), and vLLM, the runtime that read them, removed 2:4 support
(vLLM PR #36799). Names follow its vocabulary (``weight_packed`` -> ``qweight``, ``scale``, ``zero``)
and the layout is documented here, so a converter is a table.

Integrity: a SHA-256 over every tensor's bytes (names in sorted order) is stored in the metadata
and checked on load; any mismatch, a bad header or an impossible index is an EdgepruneError.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.quant.quantize import QuantSpec, dequantize, pack_int4, unpack_int4
from edgeprune.errors import EdgepruneError

FORMAT = "edgeprune-packed"
VERSION = 1
WEIGHTS_FILE = "model.packed.safetensors"
PAIRS_24 = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# -- pure encoders --------------------------------------------------------------------------------------


def _pair_tables():
    masks = torch.zeros(6, 4, dtype=torch.bool)
    code_of = torch.full((16,), -1, dtype=torch.int64)  # bitmask value of a group -> pair index
    for idx, (a, b) in enumerate(PAIRS_24):
        masks[idx, a] = masks[idx, b] = True
        code_of[(1 << a) | (1 << b)] = idx
    return masks, code_of


def encode_24(keep: torch.Tensor) -> torch.Tensor:
    """``(out, in)`` mask with exactly 2 kept per group of 4 -> ``ceil(groups / 3)`` bytes."""
    masks, code_of = _pair_tables()
    groups = keep.reshape(-1, 4).to(torch.int64)  # (out, in) -> (out*in/4, 4), row-major
    bits = (groups << torch.arange(4)).sum(-1)
    codes = code_of[bits]
    if (codes < 0).any():
        raise ValueError("every group of 4 must keep exactly 2 positions")
    pad = (-codes.numel()) % 3
    codes = torch.nn.functional.pad(codes, (0, pad))
    trip = codes.reshape(-1, 3)  # (groups/3, 3)
    return (trip[:, 0] + 6 * trip[:, 1] + 36 * trip[:, 2]).to(torch.uint8)


def decode_24(meta: torch.Tensor, out_f: int, in_f: int) -> torch.Tensor:
    """Inverse of :func:`encode_24`; ValueError on an impossible byte or size."""
    masks, _ = _pair_tables()
    n_groups = out_f * in_f // 4
    if meta.dtype != torch.uint8 or meta.numel() != -(-n_groups // 3):
        raise ValueError("2:4 metadata has the wrong size or type")
    b = meta.to(torch.int64)
    if (b >= 216).any():
        raise ValueError("2:4 metadata holds a byte >= 216")
    codes = torch.stack([b % 6, (b // 6) % 6, b // 36], dim=1).reshape(-1)[:n_groups]  # (groups/3, 3) -> (groups,)
    return masks[codes].reshape(out_f, in_f)  # (groups, 4) -> (out, in)


def pack_bits(keep: torch.Tensor) -> torch.Tensor:
    flat = keep.reshape(-1).to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8))
    return (flat.reshape(-1, 8) << torch.arange(8, dtype=torch.uint8)).sum(-1, dtype=torch.uint8)  # (n/8, 8) -> (n/8,)


def unpack_bits(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    n = shape[0] * shape[1]
    if packed.dtype != torch.uint8 or packed.numel() != -(-n // 8):
        raise ValueError("bitmask has the wrong size or type")
    bits = (packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1  # (n/8,) -> (n/8, 8)
    return bits.reshape(-1)[:n].to(torch.bool).reshape(shape)


def encode_positions(keep: torch.Tensor, nm: tuple[int, int]) -> torch.Tensor:
    return encode_24(keep) if tuple(nm) == (2, 4) else pack_bits(keep)


def decode_positions(meta: torch.Tensor, nm: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    return decode_24(meta, *shape) if tuple(nm) == (2, 4) else unpack_bits(meta, shape)


def _pack_codes(codes_u8: torch.Tensor, bits: int) -> torch.Tensor:
    return pack_int4(codes_u8) if bits == 4 else codes_u8.to(torch.uint8)


def _unpack_codes(stored: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    return unpack_int4(stored, k) if bits == 4 else stored


# -- writing ---------------------------------------------------------------------------------------------


@dataclass
class PackReport:
    file: str
    bytes_file: int  # the safetensors file on disk, header and metadata included
    bytes_linear: int  # tensors of the decoder Linears: values/codes, positions, scales, zeros, biases, SLoRB
    bytes_linear_fp32: int  # the same Linears as dense float32 weights and biases
    ratio_linear_fp32: float  # bytes_linear_fp32 / bytes_linear
    bytes_fp32: int  # the whole model as float32 (tied weights once)
    ratio_file_fp32: float  # bytes_fp32 / bytes_file
    bits_per_linear_weight: float  # 8 * bytes_linear / dense Linear weights
    bytes_by_part: dict = field(default_factory=dict)  # values / positions / scales / zeros / bias / slorb / other
    kinds: dict = field(default_factory=dict)  # nm / dense / raw -> count of Linears

    def to_dict(self) -> dict:
        return asdict(self)


def _module_quant(module: nn.Module):
    from edgeprune.compress.quant.weights import stored_quant

    return stored_quant(module)


def _decoder_linear_names(model) -> list[str]:
    from edgeprune.compress.sequential import decoder_layers

    decoder_layers(model)  # EdgepruneError for models without model.layers
    return [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and ".layers." in f".{name}"]


def _check_quant_matches(name: str, module: nn.Module, q) -> None:
    deq = q.dequantize().to(module.weight.dtype)
    if not torch.equal(deq, module.weight.detach()):
        raise EdgepruneError(
            f"{name} changed after it was quantized (its weights no longer equal the stored codes): quantize it again"
        )


def pack_state(model, *, nm: tuple[int, int] | None) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """``(tensors, layout, parts)``: what :func:`save_packed` writes, computed in memory."""
    from edgeprune.compress.sparse.modules import MaskedLinear

    if any(isinstance(m, MaskedLinear) for m in model.modules()):
        raise EdgepruneError("the model still has training-time masked layers: finish sparse training (finalize) before packing")
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    parts: dict[str, int] = {}
    linear_names = set(_decoder_linear_names(model))
    modules = dict(model.named_modules())
    state = model.state_dict()
    tied = getattr(model.config, "tie_word_embeddings", False)

    def put(key: str, t: torch.Tensor, part: str):
        tensors[key] = t.detach().contiguous()
        parts[part] = parts.get(part, 0) + t.numel() * t.element_size()

    handled: set[str] = set()
    for name in sorted(linear_names):
        mod = modules[name]
        w = mod.weight.detach()
        out_f, in_f = w.shape
        q = _module_quant(mod)
        entry = {"shape": [out_f, in_f], "dtype": str(w.dtype).replace("torch.", "")}
        if q is not None:
            _check_quant_matches(name, mod, q)
            entry["quant"] = {"bits": q.spec.bits, "group_size": q.spec.group_size, "symmetric": q.spec.symmetric}
        sparse = nm is not None and mk.satisfies_nm(w, *nm)
        if nm is not None and not sparse:
            raise EdgepruneError(f"{name} is not {nm[0]}:{nm[1]} sparse: prune it with that pattern before packing")
        if sparse:
            keep = mk.nm_mask_from_weight(w, *nm)
            entry.update(kind="nm", nm=list(nm))
            put(f"{name}.meta", encode_positions(keep, nm), "positions")
            if q is not None:
                codes = (q.codes - q.spec.qmin).to(torch.uint8)[keep].reshape(out_f, -1)  # (out, in*N/M)
                put(f"{name}.qweight", _pack_codes(codes, q.spec.bits), "values")
            else:
                put(f"{name}.values", w[keep].reshape(out_f, -1), "values")  # (out, in*N/M)
        elif q is not None:
            entry.update(kind="dense")
            put(f"{name}.qweight", _pack_codes((q.codes - q.spec.qmin).to(torch.uint8), q.spec.bits), "values")
        else:
            entry.update(kind="raw")
            put(f"{name}.weight", w, "values")
        if q is not None:
            put(f"{name}.scale", q.scale.to(torch.float16), "scales")
            if not q.spec.symmetric:
                put(f"{name}.zero", q.zero.to(torch.uint8), "zeros")
        if mod.bias is not None:
            put(f"{name}.bias", mod.bias, "bias")
        slorb = getattr(mod, "slorb_L", None)
        if slorb is not None:
            exact16 = torch.equal(slorb.detach().half().to(slorb.dtype), slorb.detach())
            put(f"{name}.slorb_L", slorb.half() if exact16 else slorb, "slorb")
            entry["slorb_k"] = int(mod.slorb_k)
        layout[name] = entry
        handled |= {f"{name}.weight", f"{name}.bias", f"{name}.slorb_L"}

    # everything else: the embedding, norms, an untied LM head (float, or int8 codes when quantized)
    for key, t in state.items():
        if key in handled or (tied and key == "lm_head.weight"):
            continue
        mod_name = key.rpartition(".")[0]
        mod = modules.get(mod_name)
        q = _module_quant(mod) if mod is not None and key.endswith(".weight") else None
        if q is not None:
            _check_quant_matches(mod_name, mod, q)
            layout[mod_name] = {"kind": "dense", "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                                "quant": {"bits": q.spec.bits, "group_size": q.spec.group_size, "symmetric": q.spec.symmetric}}  # fmt: skip
            put(f"{mod_name}.qweight", _pack_codes((q.codes - q.spec.qmin).to(torch.uint8), q.spec.bits), "other")
            put(f"{mod_name}.scale", q.scale.to(torch.float16), "other")
            if not q.spec.symmetric:
                put(f"{mod_name}.zero", q.zero.to(torch.uint8), "other")
        else:
            put(key, t, "other")
    return tensors, layout, parts


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_packed(model, out_dir: str | Path, *, nm: tuple[int, int] | None = (2, 4), tokenizer=None,
                overwrite: bool = False, extra_files: dict[str, str] | None = None, verify: bool = True,
                source_gguf: str | Path | None = None) -> PackReport:  # fmt: skip
    """Write the compressed artifact of ``model`` to ``out_dir`` atomically, read it back, and report
    its bytes. ``extra_files``: name -> text written beside it (e.g. a report). ``source_gguf``: the
    GGUF the tokenizer came from (``LoadedModel.source_gguf``), recorded for a later GGUF export."""
    from safetensors.torch import save_file

    from edgeprune.models import tokenizer_record
    from edgeprune.fileio import atomic_dir

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EdgepruneError(f"output {out_dir} already exists: pass --overwrite to replace it, or choose another directory")
    tensors, layout, parts = pack_state(model, nm=nm)
    meta = {"format": FORMAT, "version": str(VERSION), "layout": json.dumps(layout, sort_keys=True),
            "sha256": _digest(tensors)}  # fmt: skip
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=meta)
        model.config.to_json_file(str(tmp / "config.json"))
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
            tokenizer_record.write(tmp, source_gguf)
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)
        if verify:  # read back and compare every tensor with the source model (STYLE: exporters verify)
            verify_packed(model, tmp)
    return packed_report(model, out_dir / WEIGHTS_FILE, tensors, layout, parts)


def packed_report(model, path: Path, tensors, layout, parts) -> PackReport:
    linear = [k for k, e in layout.items() if ".layers." in f".{k}"]
    b_linear = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.rpartition(".")[0] in linear)
    fp32_linear = sum((e["shape"][0] * e["shape"][1]) * 4 for k, e in layout.items() if k in linear)
    fp32_linear += sum(tensors[f"{k}.bias"].numel() * 4 for k in linear if f"{k}.bias" in tensors)
    n_weights = sum(e["shape"][0] * e["shape"][1] for k, e in layout.items() if k in linear)
    seen, fp32_all = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            fp32_all += p.numel() * 4
    for name, mod in model.named_modules():  # SLoRB parameters are extra, not part of the FP32 reference
        if getattr(mod, "slorb_L", None) is not None:
            fp32_all -= mod.slorb_L.numel() * 4
    size = os.path.getsize(path)
    kinds: dict[str, int] = {}
    for k in linear:
        kinds[layout[k]["kind"]] = kinds.get(layout[k]["kind"], 0) + 1
    return PackReport(
        file=str(path), bytes_file=size, bytes_linear=b_linear, bytes_linear_fp32=fp32_linear,
        ratio_linear_fp32=fp32_linear / max(b_linear, 1), bytes_fp32=fp32_all, ratio_file_fp32=fp32_all / size,
        bits_per_linear_weight=8 * b_linear / max(n_weights, 1), bytes_by_part=parts, kinds=kinds,
    )  # fmt: skip


# -- reading ---------------------------------------------------------------------------------------------


def _corrupt(path, why: str) -> EdgepruneError:
    return EdgepruneError(f"corrupt compressed file {path} ({why}): re-create it with edgeprune sparsify")


def is_packed(path: str | Path) -> bool:
    """True for a packed artifact directory (or its safetensors file)."""
    path = Path(path).expanduser()
    return (path / WEIGHTS_FILE).is_file() or (path.is_file() and path.name == WEIGHTS_FILE)


def read_packed(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """``(tensors, layout, directory)`` of a packed artifact (a directory or its safetensors file), checked."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise EdgepruneError(f"no compressed model at {path}: pass a directory written by edgeprune sparsify")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers and truncation
        raise _corrupt(file, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}") from None
    if meta.get("format") != FORMAT:
        raise _corrupt(file, f"format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != str(VERSION):
        raise EdgepruneError(f"{file} is {FORMAT} version {meta.get('version')}: this edgeprune reads version {VERSION}")
    try:
        layout = json.loads(meta["layout"])
    except (KeyError, json.JSONDecodeError):
        raise _corrupt(file, "unreadable layout metadata") from None
    if meta.get("sha256") != _digest(tensors):
        raise _corrupt(file, "checksum mismatch")
    return tensors, layout, file.parent


def unpack_state(tensors: dict[str, torch.Tensor], layout: dict, *, where: str = "") -> dict[str, torch.Tensor]:
    """The dense state dict (plus ``*.slorb_L``) described by ``layout``; ValueError when inconsistent."""
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, e in layout.items():
        out_f, in_f = e["shape"]
        dtype = _DTYPES[e["dtype"]]
        q = e.get("quant")
        spec = QuantSpec(q["bits"], q["group_size"], q["symmetric"]) if q else None
        if e["kind"] == "nm":
            n, m = e["nm"]
            keep = decode_positions(tensors[f"{name}.meta"], (n, m), (out_f, in_f))
            k = in_f * n // m
            if spec is not None:
                codes_k = _unpack_codes(tensors[f"{name}.qweight"], spec.bits, k)
                codes = torch.zeros(out_f, in_f, dtype=torch.int32)
                codes[keep] = codes_k.reshape(-1).to(torch.int32)
                zero = _zero_points(tensors, name, spec, out_f, in_f)
                codes = torch.where(keep, codes, zero.repeat_interleave(spec.group_size, dim=1) - spec.qmin)
                weight = _dequant(codes, tensors[f"{name}.scale"], zero, spec).to(dtype)
            else:
                values = tensors[f"{name}.values"]
                if values.shape != (out_f, k):
                    raise ValueError(f"{name}.values has shape {tuple(values.shape)}, expected {(out_f, k)}")
                weight = torch.zeros(out_f, in_f, dtype=values.dtype)
                weight[keep] = values.reshape(-1)
            used |= {f"{name}.meta", f"{name}.qweight", f"{name}.values"}
        elif e["kind"] == "dense":
            codes = _unpack_codes(tensors[f"{name}.qweight"], spec.bits, in_f).to(torch.int32)
            zero = _zero_points(tensors, name, spec, out_f, in_f)
            weight = _dequant(codes, tensors[f"{name}.scale"], zero, spec).to(dtype)
            used.add(f"{name}.qweight")
        elif e["kind"] == "raw":
            weight = tensors[f"{name}.weight"]
            used.add(f"{name}.weight")
        else:
            raise ValueError(f"unknown kind {e['kind']!r} for {name}")
        if weight.shape != (out_f, in_f):
            raise ValueError(f"{name} decodes to {tuple(weight.shape)}, expected {(out_f, in_f)}")
        state[f"{name}.weight"] = weight
        used |= {f"{name}.scale", f"{name}.zero"}
        for extra in ("bias", "slorb_L"):
            if f"{name}.{extra}" in tensors:
                t = tensors[f"{name}.{extra}"]
                state[f"{name}.{extra}"] = t.to(dtype) if extra == "slorb_L" else t
                used.add(f"{name}.{extra}")
    for key, t in tensors.items():
        if key not in used:
            state[key] = t
    return state


def _zero_points(tensors, name, spec: QuantSpec, out_f: int, in_f: int) -> torch.Tensor:
    shape = (out_f, in_f // spec.group_size)
    if spec.symmetric:
        return torch.zeros(shape, dtype=torch.int32)
    z = tensors[f"{name}.zero"]
    if tuple(z.shape) != shape:
        raise ValueError(f"{name}.zero has shape {tuple(z.shape)}, expected {shape}")
    return z.to(torch.int32)


def _dequant(codes_unsigned: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    if tuple(scale.shape) != (codes_unsigned.shape[0], codes_unsigned.shape[1] // spec.group_size):
        raise ValueError(f"scale has shape {tuple(scale.shape)}, which does not match the codes")
    return dequantize(codes_unsigned + spec.qmin, scale.float(), zero, spec.group_size)


def build_model(config_dir: Path, layout: dict):
    """An empty model of the saved architecture with SLoRB modules where the layout has them."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgeprune.compress.sparse.modules import SLoRBLinear, replace_module

    from edgeprune.models.registration import register_now

    register_now()  # edgeprune_llama with transformers' AutoConfig (a no-op once registered)
    config = AutoConfig.from_pretrained(str(config_dir))
    try:  # every weight is overwritten: skip the random init (seconds for 135M parameters)
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        no_init_weights = contextlib.nullcontext
    with torch.random.fork_rng(devices=[]), no_init_weights():  # and leave the global RNG as it was
        model = AutoModelForCausalLM.from_config(config)
    for name, e in layout.items():
        if e.get("slorb_k"):
            old = model.get_submodule(name)
            replace_module(model, name, SLoRBLinear(old.in_features, old.out_features, bias=old.bias is not None,
                                                    slorb_k=e["slorb_k"]))  # fmt: skip
    return model


def load_packed(path: str | Path, *, tokenizer: bool = True):
    """The model (same logits as the model saved) and tokenizer (or None) of a packed artifact, as a
    :class:`~edgeprune.models.loading.LoadedModel` (unpacks as ``model, tokenizer``)."""
    from edgeprune.models import tokenizer_record
    from edgeprune.models.loading import LoadedModel

    tensors, layout, directory = read_packed(path)
    try:
        state = unpack_state(tensors, layout)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise _corrupt(directory / WEIGHTS_FILE, f"{type(exc).__name__}: {exc}") from None
    model = build_model(directory, layout)
    dtype = _DTYPES[next(iter(layout.values()))["dtype"]] if layout else torch.float32
    model.to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (model.config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise _corrupt(directory / WEIGHTS_FILE, f"missing {missing[:2]}, unexpected {unexpected[:2]}")
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    tok = None
    if tokenizer and any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(directory))
    return LoadedModel(model, tok, source=str(path), kind="packed", path=directory,
                       source_gguf=tokenizer_record.find(directory) if tok is not None else None)  # fmt: skip


def verify_packed(model, path: str | Path) -> None:
    """Read the artifact back and require every tensor to equal the model's, bit for bit."""
    tensors, layout, directory = read_packed(path)
    state = unpack_state(tensors, layout)
    source = model.state_dict()
    tied = getattr(model.config, "tie_word_embeddings", False)
    for key, src in source.items():
        if tied and key == "lm_head.weight":
            continue
        t = state.get(key)
        if t is None or t.shape != src.shape or not torch.equal(t.to(src.dtype), src):
            raise EdgepruneError(f"read-back check failed for {key}: the packed file does not reproduce the model")
