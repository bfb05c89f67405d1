"""K-quants (Q4_K_M, Q6_K, ...) through llama.cpp's own quantizer.

gguf-py can write the legacy block types only (notes 1.6), so K-quant files are made by writing a
full-precision GGUF first and handing it to llama.cpp's ``llama_model_quantize``, which also
applies llama.cpp's per-tensor mixes (Q4_K_M keeps some matrices at Q6_K) and fallbacks for odd
row lengths. llama-cpp-python exposes that function, so ``pip install`` alone reaches every type:
it runs in a child process (``python -m edgeprune.export.gguf.kquant SRC DST TYPE THREADS``, the
command line of llama.cpp's ``llama-quantize`` binary), because a C-level abort must not take the
exporter and its clean-up with it. A ``llama-quantize`` binary can still be named instead.

An importance matrix (imatrix.py) reaches the child as llama-quantize's ``--imatrix FILE``: the
child reads the file, divides sums by counts as llama-quantize does, and hands llama.cpp the
NULL-name-terminated ``llama_model_imatrix_data`` array of ``llama_model_quantize_params.imatrix``
(llama.h; llama-cpp-python 0.3.36 exposes it), plus the ``quantize.imatrix.*`` keys llama-quantize
writes, so the file says which text it was quantized with.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError


def quantizer_command(explicit: str | os.PathLike | None) -> list[str]:
    """The quantizer's command prefix: ``explicit`` (a llama-quantize binary) if given, else this
    module run by the current interpreter; one-line error for an explicit path that cannot run."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise EdgepruneError(f"llama-quantize {path} is not an executable file: pass the path of llama.cpp's llama-quantize binary")
        return [str(path)]
    return [sys.executable, "-m", "edgeprune.export.gguf.kquant"]


# llama.cpp as vendored in llama-cpp-python 0.3.36 logs one line per fallback before quantizing:
# "warning: blk.0.ffn_down.weight - ncols 1536 not divisible by 256 (required for type q4_K) -> falling back to q5_0"
_FALLBACK_LINE = re.compile(
    r"(\S+)\s+-\s+ncols\s+(\d+)\s+not divisible by\s+(\d+)\s+\(required for type\s+(\w+)\)\s*->\s*falling back to\s+(\w+)"
)
# Older builds log inside each tensor's line, "[  12/ 272]   blk.0.ffn_down.weight - [...] ... required for
# q4_K - using fallback quantization q5_0".
_TENSOR_LINE = re.compile(r"\[\s*\d+\s*/\s*\d+\s*\]\s+(\S+)\s+-\s")
_FALLBACK = re.compile(r"required for (\w+)\s*-\s*using fallback quantization (\w+)")


def parse_fallbacks(log: str) -> list[dict]:
    """Tensors llama-quantize gave a fallback type, from its log (pure text parsing)."""
    out = [
        {"tensor": m.group(1), "wanted": m.group(4).upper(), "used": m.group(5).upper(),
         "reason": f"row length {m.group(2)} is not a multiple of {m.group(3)}"}
        for m in _FALLBACK_LINE.finditer(log)
    ]  # fmt: skip
    if out:
        return out
    starts = list(_TENSOR_LINE.finditer(log))
    for i, m in enumerate(starts):
        chunk = log[m.end() : starts[i + 1].start() if i + 1 < len(starts) else len(log)]
        fb = _FALLBACK.search(chunk)
        if fb:
            out.append({"tensor": m.group(1), "wanted": fb.group(1).upper(), "used": fb.group(2).upper(), "reason": "row length not a multiple of the block size"})
    return out


# The llama-cpp-python this package is tested with, whose quantize params take a C array of
# llama_model_imatrix_data; older releases typed the field void* (a C++ std::unordered_map
# llama-quantize fills), which Python cannot build. pyproject's lower bound stays 0.3.7: only
# an export with an imatrix needs the newer release, and it says so.
IMATRIX_MIN_LLAMA_CPP_PYTHON = "0.3.36"


def check_imatrix_support(command: list[str]) -> None:
    """One-line error when ``command`` is this module's child and the installed llama-cpp-python
    cannot pass an imatrix (a llama-quantize binary reads ``--imatrix`` itself)."""
    if command[-1:] != ["edgeprune.export.gguf.kquant"]:
        return
    import llama_cpp

    if not hasattr(llama_cpp, "llama_model_imatrix_data"):
        have = getattr(llama_cpp, "__version__", "?")
        raise EdgepruneError(
            f"llama-cpp-python {have} cannot pass an importance matrix to llama.cpp's quantizer: install "
            f"llama-cpp-python>={IMATRIX_MIN_LLAMA_CPP_PYTHON} or pass a llama-quantize binary (--llama-quantize)"
        )


def run_llama_quantize(command: list[str], src: Path, dst: Path, qtype: str, n_threads: int, *,
                       imatrix: Path | None = None) -> tuple[list[dict], str]:  # fmt: skip
    """Quantize ``src`` into ``dst`` with ``command`` (see :func:`quantizer_command`), weighting the
    rounding by the ``imatrix`` file when given; return (fallbacks, the log's last lines)."""
    cmd = [*command, *(["--imatrix", str(imatrix)] if imatrix is not None else []), str(src), str(dst), qtype.upper(), str(n_threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise EdgepruneError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    log = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0 or not dst.is_file() or dst.stat().st_size == 0:
        last = next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), f"exit code {proc.returncode}")
        raise EdgepruneError(f"llama.cpp's quantizer failed to make {qtype}: {last[:200]}")
    tail = "\n".join(log.strip().splitlines()[-3:])
    return parse_fallbacks(log), tail


def _imatrix_params(llama_cpp, path: str, params) -> list:
    """Set ``params.imatrix`` and ``params.kv_overrides`` from the imatrix file at ``path``; return
    the ctypes objects they point into (they must outlive the llama_model_quantize call)."""
    import ctypes

    from edgeprune.export.gguf.imatrix import read_imatrix

    im = read_imatrix(path)
    means = im.means()
    names = [n.encode() for n in means]
    arrays = [np.ascontiguousarray(v, dtype=np.float32) for v in means.values()]
    entries = (llama_cpp.llama_model_imatrix_data * (len(arrays) + 1))()  # zeroed: the last one (name NULL) ends the array
    for e, name, arr in zip(entries, names, arrays):
        e.name, e.size = name, arr.size
        e.data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    # what llama-quantize records (quantize.imatrix.*): strings are cut to the 127 bytes a key's value holds
    kvs = [("quantize.imatrix.file", Path(path).name), ("quantize.imatrix.dataset", ", ".join(im.datasets)),
           ("quantize.imatrix.entries_count", len(arrays)), ("quantize.imatrix.chunks_count", im.chunk_count)]  # fmt: skip
    overrides = (llama_cpp.llama_model_kv_override * (len(kvs) + 1))()  # zeroed: an empty key ends the array
    for o, (key, value) in zip(overrides, kvs):
        o.key = key.encode()
        if isinstance(value, str):
            o.tag, o.value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, value.encode()[:127]
        else:
            o.tag, o.value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, int(value)
    params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    return [entries, names, arrays, overrides]


def _child_main(argv: list[str]) -> int:
    """``[--imatrix FILE] SRC DST TYPE [THREADS]``: llama_model_quantize through llama-cpp-python, its log on stderr."""
    import ctypes

    import llama_cpp

    imatrix = None
    if argv[:1] == ["--imatrix"]:
        imatrix, argv = argv[1], argv[2:]
        if not hasattr(llama_cpp, "llama_model_imatrix_data"):
            print(f"error: this llama-cpp-python cannot pass an imatrix: install llama-cpp-python>={IMATRIX_MIN_LLAMA_CPP_PYTHON}", file=sys.stderr)
            return 2
    src, dst, qtype = argv[0], argv[1], argv[2]
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        print(f"error: llama.cpp has no file type {qtype}", file=sys.stderr)
        return 2

    @llama_cpp.llama_log_callback
    def to_stderr(level, text, user_data):  # the fallback lines parse_fallbacks reads
        sys.stderr.write(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(to_stderr, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = int(argv[3]) if len(argv) > 3 else 1
    keep = _imatrix_params(llama_cpp, imatrix, params) if imatrix else []  # noqa: F841 (alive until quantized)
    failed = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    sys.stderr.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
