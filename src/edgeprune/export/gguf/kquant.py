"""K-quants (Q4_K_M, Q6_K, ...) through llama.cpp's ``llama-quantize`` binary.

gguf-py can write the legacy block types only (notes 1.6), so K-quant files are made by writing a
full-precision GGUF first and handing it to ``llama-quantize``, which also applies llama.cpp's own
per-tensor mixes (Q4_K_M keeps some matrices at Q6_K) and fallbacks for odd row lengths.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from edgeprune.errors import EdgepruneError

BINARY = "llama-quantize"


def find_llama_quantize(explicit: str | os.PathLike | None, qtype: str, pure_types: list[str]) -> Path:
    """The binary to use: ``explicit`` if given, else ``llama-quantize`` on PATH; one-line error if none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise EdgepruneError(f"llama-quantize {path} is not an executable file: pass the path of llama.cpp's llama-quantize binary")
        return path
    found = shutil.which(BINARY)
    if found is None:
        raise EdgepruneError(
            f"type {qtype} needs llama.cpp's llama-quantize binary, which is not on PATH: build llama.cpp and pass "
            f"--llama-quantize PATH (llama_quantize=PATH), or use a type that needs no binary ({', '.join(pure_types)})"
        )
    return Path(found)


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


def run_llama_quantize(binary: Path, src: Path, dst: Path, qtype: str, n_threads: int) -> tuple[list[dict], str]:
    """Quantize ``src`` into ``dst``; return (fallbacks, the log's last lines)."""
    cmd = [str(binary), str(src), str(dst), qtype.upper(), str(n_threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise EdgepruneError(f"cannot run {binary}: {exc.strerror or exc}") from None
    log = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0 or not dst.is_file() or dst.stat().st_size == 0:
        last = next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), f"exit code {proc.returncode}")
        raise EdgepruneError(f"llama-quantize failed to make {qtype}: {last[:200]}")
    tail = "\n".join(log.strip().splitlines()[-3:])
    return parse_fallbacks(log), tail
