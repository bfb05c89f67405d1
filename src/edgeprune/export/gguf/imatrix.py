"""Importance matrices (llama.cpp's ``imatrix``): what each input channel of each matrix carries.

For every Linear that becomes a GGUF matrix, the mean over calibration tokens of ``x_j ** 2``, the
square of its j-th input. llama.cpp's quantizer minimises ``sum_j w_j (W_ij - Q_ij) ** 2`` with
these ``w_j`` instead of the plain squared error, so channels the text uses most are rounded best.

Conventions are llama.cpp's (``tools/imatrix``, ``tools/quantize``, ``src/llama-quant.cpp``):
- entries are keyed by GGUF tensor name (``blk.0.attn_q.weight``), one value per column (ne0);
  Q/K are permuted by rows only (layout.permute_qk), so the column order is the model's;
- only ``blk.*`` matrices and, for an untied model, ``output.weight`` (``llama-imatrix
  --process-output``); a tied ``token_embd.weight`` is also the embedding table, whose rows are
  looked up, not multiplied, so it gets none, as in llama-imatrix;
- the file is llama.cpp's GGUF imatrix: ``<name>.in_sum2`` (sum of x^2, F32, ne (ncols, 1)) and
  ``<name>.counts`` (tokens summed, F32, ne (1, 1)), ``general.type = imatrix``,
  ``imatrix.datasets`` / ``chunk_count`` / ``chunk_size``: ``llama-quantize --imatrix`` reads it;
- the quantizer is given ``in_sum2 / counts`` (llama-quantize's ``load_imatrix`` divides too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError

# The key/values llama-imatrix writes; llama-quantize refuses a GGUF imatrix without all three.
DATASETS_KEY = "imatrix.datasets"
CHUNK_COUNT_KEY = "imatrix.chunk_count"
CHUNK_SIZE_KEY = "imatrix.chunk_size"
SUM_SUFFIX = ".in_sum2"
COUNT_SUFFIX = ".counts"


@dataclass(frozen=True)
class Imatrix:
    """Per-input-channel sums of squared activations, by GGUF tensor name."""

    sums: dict[str, np.ndarray]  # name -> (ncols,) float64 sum of x^2 over the tokens counted
    counts: dict[str, int]  # name -> tokens summed
    datasets: tuple[str, ...]  # where the text came from (a calibration source's description)
    chunk_count: int  # windows
    chunk_size: int  # tokens per window

    def means(self) -> dict[str, np.ndarray]:
        """What the quantizer is given: ``sums / counts``, float32 (1.0 where nothing was counted, as llama.cpp does)."""
        return {n: (s / self.counts[n] if self.counts[n] else np.ones_like(s)).astype(np.float32) for n, s in self.sums.items()}

    @property
    def tokens(self) -> int:
        return max(self.counts.values(), default=0)

    def describe(self) -> dict:
        return {"datasets": list(self.datasets), "tokens": self.tokens, "chunks": self.chunk_count,
                "chunk_size": self.chunk_size, "entries": len(self.sums)}  # fmt: skip


# -- collecting -------------------------------------------------------------------------------------


def imatrix_modules(model) -> dict[str, str]:
    """``{module name: GGUF tensor name}`` of the Linears that get an entry (see the module docstring),
    through the exporter's own name map (writer.gguf_name)."""
    import torch

    from edgeprune.export.gguf.spec import model_spec
    from edgeprune.export.gguf.writer import gguf_name

    tied = model_spec(model).tied
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        gg, _ = gguf_name(f"{name}.weight")
        if gg.startswith("blk.") or (gg == "output.weight" and not tied):
            out[name] = gg
    return out


def collect_imatrix(model, windows, *, source: str | None = None, batch_tokens: int = 4096, progress: bool | None = None) -> Imatrix:
    """Run ``windows`` (``(n, seq_len)`` token ids, or ``data.windows.TokenWindows``) through ``model``
    and sum the squared inputs of every matrix :func:`imatrix_modules` names.

    Hooks on the Linears' inputs keep one ``(ncols,)`` sum each, never the activations themselves;
    windows run ``batch_tokens // seq_len`` at a time under ``torch.inference_mode``.
    """
    import torch
    from tqdm.auto import tqdm

    ids = getattr(windows, "ids", windows)
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.dtype != torch.long or ids.numel() == 0:
        raise EdgepruneError("imatrix text must be (n, seq_len) token ids as a torch.long tensor: pass calibration windows")
    source = source or getattr(windows, "source", None) or "token ids"
    names = imatrix_modules(model)
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(names.values(), 0)

    def hook(gg):
        def pre(_mod, args):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])  # (batch, seq, ncols) -> (tokens, ncols)
            s = torch.sum(x.float() * x.float(), dim=0, dtype=torch.float64)
            sums[gg] = sums[gg] + s if gg in sums else s
            counts[gg] += x.shape[0]

        return pre

    # The output matrix's input is the decoder's last hidden state: taken from the decoder's output,
    # so no logits (vocabulary x tokens, 800 MB a batch for a 49k vocabulary) are ever computed.
    head = next((m for m, gg in names.items() if gg == "output.weight"), None)
    handles = [modules[m].register_forward_pre_hook(hook(gg)) for m, gg in names.items() if m != head]
    decoder = model.base_model
    device = next(model.parameters()).device
    per_batch = max(1, batch_tokens // ids.shape[1])
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, ids.shape[0], per_batch), desc="imatrix", unit="batch",
                              disable=None if progress is None else not progress):  # fmt: skip
                hidden = decoder(input_ids=ids[start : start + per_batch].to(device), use_cache=False).last_hidden_state
                if head is not None:
                    hook("output.weight")(None, (hidden,))
    finally:
        for h in handles:
            h.remove()
    return Imatrix({gg: sums[gg].cpu().numpy() for gg in names.values() if gg in sums},
                   {gg: counts[gg] for gg in names.values() if gg in sums},
                   (source,), int(ids.shape[0]), int(ids.shape[1]))  # fmt: skip


def compute_imatrix(model, tokenizer, source: str | None, *, n_windows: int, seq_len: int, seed: int = 0,
                    data_dir: str | None = None, progress: bool | None = None) -> Imatrix:  # fmt: skip
    """Draw ``n_windows`` x ``seq_len`` calibration tokens from ``source`` (data.calib's names: general,
    shakespeare, self, a file; never the evaluation set) and :func:`collect_imatrix` on them."""
    from edgeprune.data.calib import calibration_windows

    windows = calibration_windows(tokenizer, source, n_windows=n_windows, seq_len=seq_len, seed=seed, model=model,
                                  data_dir=data_dir, progress=bool(progress))  # fmt: skip
    return collect_imatrix(model, windows, progress=progress)


# -- which types read it ----------------------------------------------------------------------------


def type_problems(qtype: str) -> list[str]:
    """``[]`` when llama.cpp's quantizer reads an imatrix for ``qtype``, else the one problem."""
    from edgeprune.export.gguf.tables import IMATRIX_QTYPES

    if qtype in IMATRIX_QTYPES:
        return []
    return [f"an importance matrix changes nothing in a {qtype} file (llama.cpp reads it for "
            f"{', '.join(IMATRIX_QTYPES)} only): pick one of those or drop the imatrix"]  # fmt: skip


# -- the file ---------------------------------------------------------------------------------------


def write_imatrix(path: str | Path, im: Imatrix) -> Path:
    """``im`` as llama.cpp's GGUF imatrix file at ``path`` (atomically), read back before it appears."""
    from gguf import GGUFType, GGUFWriter

    from edgeprune.fileio import atomic_file

    path = Path(path)
    with atomic_file(path, overwrite=True) as tmp:
        w = GGUFWriter(str(tmp), arch="")  # gguf-py always writes general.architecture; llama.cpp ignores it here
        try:
            w.add_type(GGUFType.IMATRIX)
            w.add_array(DATASETS_KEY, list(im.datasets))
            w.add_uint32(CHUNK_COUNT_KEY, im.chunk_count)
            w.add_uint32(CHUNK_SIZE_KEY, im.chunk_size)
            for name in sorted(im.sums):
                # numpy shapes are ggml's reversed: (nmat=1, ncols) is ne (ncols, 1), (1, 1) is ne (1, 1)
                w.add_tensor(name + SUM_SUFFIX, im.sums[name].astype(np.float32).reshape(1, -1))
                w.add_tensor(name + COUNT_SUFFIX, np.full((1, 1), im.counts[name], dtype=np.float32))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        except OSError as exc:
            raise EdgepruneError(f"could not write {path}: {exc.strerror or exc}") from None
        finally:
            w.close()
        back = read_imatrix(tmp)
        if set(back.sums) != set(im.sums) or back.counts != im.counts:
            raise EdgepruneError(f"the imatrix read back from {path} differs from what was written: check the disk and write it again")
    return path


def read_imatrix(path: str | Path) -> Imatrix:
    """An imatrix GGUF file (this module's or llama-imatrix's); one-line errors for anything else."""
    from edgeprune.models.files import gguf_field, open_gguf

    path = Path(path)
    fix = "compute one with `edgeprune export gguf --imatrix-calib SOURCE` or llama.cpp's llama-imatrix"
    if not path.is_file():
        raise EdgepruneError(f"imatrix file {path} does not exist: {fix}")
    try:
        reader = open_gguf(path)
    except EdgepruneError:
        raise EdgepruneError(f"{path} is not a GGUF imatrix file (llama.cpp's legacy .dat format is not read): {fix}") from None
    tensors = {t.name: t for t in reader.tensors}
    sums, counts = {}, {}
    for tname, t in tensors.items():
        if not tname.endswith(SUM_SUFFIX):
            continue
        name = tname[: -len(SUM_SUFFIX)]
        c = tensors.get(name + COUNT_SUFFIX)
        if c is None or t.tensor_type.name != "F32" or c.tensor_type.name != "F32":
            raise EdgepruneError(f"imatrix {path}: {name} needs F32 {name}{SUM_SUFFIX} and {name}{COUNT_SUFFIX} tensors: {fix}")
        n_counts = int(np.asarray(c.data).size)
        if n_counts != 1:  # one count per expert: mixture-of-experts matrices, which no exported family has
            raise EdgepruneError(f"imatrix {path}: {name} has {n_counts} expert counts; edgeprune exports dense models only: {fix}")
        sums[name] = np.asarray(t.data, dtype=np.float64).reshape(-1)
        counts[name] = int(round(float(np.asarray(c.data).reshape(-1)[0])))
    if not sums:
        raise EdgepruneError(f"{path} holds no imatrix entries (no *{SUM_SUFFIX} tensors): {fix}")
    datasets = gguf_field(reader, DATASETS_KEY, [])
    return Imatrix(sums, counts, tuple(datasets if isinstance(datasets, list) else [datasets]),
                   int(gguf_field(reader, CHUNK_COUNT_KEY, 0)), int(gguf_field(reader, CHUNK_SIZE_KEY, 0)))  # fmt: skip


def check_imatrix(im: Imatrix, columns: dict[str, int], path: str | Path) -> None:
    """Raise a one-line error unless every entry of ``im`` names a matrix of the file (``columns``:
    GGUF name -> row length) with that many values, all finite. Matrices without an entry are
    quantized without one, as llama.cpp does."""
    unknown = sorted(set(im.sums) - set(columns))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise EdgepruneError(f"imatrix {path} has entries for tensors this model does not have ({', '.join(unknown[:3])}{more}): "
                             "compute the imatrix with this model")  # fmt: skip
    for name, s in sorted(im.sums.items()):
        if s.size != columns[name]:
            raise EdgepruneError(f"imatrix {path}: {name} has {s.size} values but the matrix has {columns[name]} columns: "
                                 "compute the imatrix with this model")  # fmt: skip
        if not np.isfinite(s).all():
            raise EdgepruneError(f"imatrix {path}: {name} holds non-finite values: compute it again (llama.cpp refuses it)")
