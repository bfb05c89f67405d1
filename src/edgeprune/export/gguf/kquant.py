"""K-quants (Q4_K_M, Q6_K, ...) through llama.cpp's own quantizer.

gguf-py can write the legacy block types only (notes 1.6), so K-quant files are made by writing a
full-precision GGUF first and handing it to llama.cpp's ``llama_model_quantize``, which also
applies llama.cpp's per-tensor mixes (Q4_K_M keeps some matrices at Q6_K) and fallbacks for odd
row lengths. llama-cpp-python exposes that function, so ``pip install`` alone reaches every type:
it runs in a child process (``python -m edgeprune.export.gguf.kquant SRC DST TYPE THREADS``, the
command line of llama.cpp's ``llama-quantize`` binary), because a C-level abort must not take the
exporter and its clean-up with it. A ``llama-quantize`` binary can still be named instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


def run_llama_quantize(command: list[str], src: Path, dst: Path, qtype: str, n_threads: int) -> tuple[list[dict], str]:
    """Quantize ``src`` into ``dst`` with ``command`` (see :func:`quantizer_command`); return
    (fallbacks, the log's last lines)."""
    cmd = [*command, str(src), str(dst), qtype.upper(), str(n_threads)]
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


def _child_main(argv: list[str]) -> int:
    """``SRC DST TYPE [THREADS]``: llama_model_quantize through llama-cpp-python, its log on stderr."""
    import ctypes

    import llama_cpp

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
    failed = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    sys.stderr.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
