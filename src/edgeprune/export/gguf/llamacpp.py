"""Running a GGUF in llama.cpp (through llama-cpp-python), in this process or in a child process.

The exporter's checks run llama.cpp in a child process (``python -m edgeprune.export.gguf.llamacpp
REQUEST.json``): a malformed file can make llama.cpp abort (an uncaught C++ exception kills the
interpreter), and that must not take the exporter, and its clean-up of temporary files, with it.
Benchmarks use :func:`llama_model` in-process. llama_cpp is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.runner import new_llama


def default_threads() -> int:
    """Half the usable cores, 1 to 8: torch and ggml spin while waiting for their threads, so using
    every core of a busy (shared) machine is many times slower than using fewer."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // 2))


GGML_TYPE_F32 = 0  # ggml_type enum value


_WHY = re.compile(r"error|wrong|invalid|unknown|missing|not found", re.I)


@contextlib.contextmanager
def llama_model(
    path: Path, *, n_ctx: int = 512, logits_all: bool = True, vocab_only: bool = False, n_threads: int | None = None,
    f32_kv_cache: bool = False,
):
    """Open a GGUF in llama-cpp-python; a load failure becomes one line with llama.cpp's reason.

    ``f32_kv_cache``: keep K and V in float32 instead of llama.cpp's default float16, so that logits
    reflect the file's weights and not the cache's rounding (which a pruned model with large
    activations can amplify to ~1% of the logit range).
    """
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):  # kept to say why a load failed
        lines.append(text.decode("utf-8", errors="replace").strip())

    threads = n_threads or default_threads()
    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        llm = new_llama(
            model_path=str(path), n_ctx=n_ctx, logits_all=logits_all, vocab_only=vocab_only,
            n_threads=threads, n_threads_batch=threads, verbose=False,
            **({"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_kv_cache else {}),
        )  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        reason = next((ln for ln in reversed(lines) if _WHY.search(ln) and "failed to load model" not in ln), str(exc))
        raise EdgepruneError(f"llama.cpp cannot load {Path(path).name}: {reason.split('error loading model: ')[-1][:200]}") from None
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    try:
        yield llm
    finally:
        llm.close()


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits ``(len(ids), vocab)`` for one sequence, from an empty cache."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


@dataclass
class LlamaRun:
    logits: list[list[np.ndarray]]  # per file, per prompt: (positions, vocab)
    tokens: list[list[int]]  # per line, no BOS/EOS, special tokens parsed
    tokens_with_specials: list[int] | None  # the first line with the vocabulary's BOS/EOS added


def _run(request: dict) -> tuple[list[np.ndarray], dict]:
    logits = []
    for path in request["paths"]:
        with llama_model(Path(path), n_ctx=request["n_ctx"], n_threads=request["n_threads"], f32_kv_cache=True) as llm:
            logits += [llama_logits(llm, ids) for ids in request["prompts"]]
            lines = request["lines"]  # tokenized with the last file (the one being exported)
            tokens = [llm.tokenize(ln.encode("utf-8"), add_bos=False, special=True) for ln in lines]
            first = llm.tokenize(lines[0].encode("utf-8"), add_bos=True, special=True) if lines else None
    return logits, {"tokens": tokens, "tokens_with_specials": first}


def run_in_child(paths: list[Path], prompts: list[list[int]], lines: list[str], *, n_ctx: int, n_threads: int) -> LlamaRun:
    """Logits of every file (F32 KV cache) and the last file's tokenizations, from llama.cpp in a
    child process (see module docstring)."""
    request = {"paths": [str(p) for p in paths], "prompts": prompts, "lines": lines, "n_ctx": n_ctx, "n_threads": n_threads}
    with tempfile.TemporaryDirectory(prefix="edgeprune-llamacpp-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps(request))
        proc = subprocess.run(
            [sys.executable, "-m", "edgeprune.export.gguf.llamacpp", str(req)], capture_output=True, text=True, errors="replace"
        )
        result = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result.is_file():
            err = Path(tmp) / "error.txt"
            if err.is_file():
                raise EdgepruneError(err.read_text().strip())
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("#")]
            why = next((ln for ln in reversed(tail) if _WHY.search(ln) or "what()" in ln), tail[-1] if tail else "")
            names = ", ".join(Path(p).name for p in paths)
            raise EdgepruneError(f"llama.cpp crashed running {names} (exit {proc.returncode}): {why.strip()[:200]}")
        meta = json.loads(result.read_text())
        with np.load(Path(tmp) / "logits.npz") as npz:
            flat = [npz[f"arr_{i}"] for i in range(len(paths) * len(prompts))]
    logits = [flat[i * len(prompts) : (i + 1) * len(prompts)] for i in range(len(paths))]
    return LlamaRun(logits, meta["tokens"], meta["tokens_with_specials"])


def _child_main(request_path: str) -> int:
    tmp = Path(request_path).parent
    request = json.loads(Path(request_path).read_text())
    try:
        logits, meta = _run(request)
    except EdgepruneError as exc:
        (tmp / "error.txt").write_text(str(exc))
        return 2
    except Exception as exc:  # llama-cpp-python's own errors (e.g. a failed decode)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        names = ", ".join(Path(p).name for p in request["paths"])
        (tmp / "error.txt").write_text(f"llama.cpp failed running {names}: {first[:200]}")
        return 2
    np.savez(tmp / "logits.npz", *logits)
    (tmp / "result.json").write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
