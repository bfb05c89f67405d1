"""``edgeprune export gguf --model M --type q8_0 --out model.gguf``: write and verify a GGUF file."""

from __future__ import annotations

# llama-imatrix's own chunk is 512 tokens; 64 of them (32k tokens) took 5 min for SmolLM2-135M on a
# busy 2-core host. Means of squares settle early: a build's 64 x 128 draw gave the same Q4_K_M ppl
# (bench/results/imatrix.md)
IMATRIX_WINDOWS = 64
IMATRIX_SEQ_LEN = 512


def add_parser(sub) -> None:
    from edgeprune.export.gguf.tables import QTYPES

    p = sub.add_parser(
        "gguf",
        help="write a GGUF file for llama.cpp, then load it in llama.cpp and compare with torch",
        description="Uniform models are written as llama (or qwen2), per-layer widths as deci. "
        "The file is verified (metadata, weights, llama.cpp logits, tokenization) before it appears; "
        "a report is written beside it as NAME.report.json.",
    )
    p.add_argument("--model", default=None, help="HF directory, .gguf file or built-in name (default: smollm2-135m)")
    p.add_argument("--type", dest="qtype", default="f16", metavar="TYPE", help=f"one of {', '.join(QTYPES)} (default f16)")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the read-back and llama.cpp checks")
    p.add_argument("--llama-quantize", metavar="PATH", default=None, help="a llama.cpp llama-quantize binary to make K-quants with (default: llama.cpp's quantizer through llama-cpp-python)")
    p.add_argument("--source-gguf", metavar="FILE", default=None,
                   help="copy the tokenizer of this .gguf file or built-in name verbatim (default: the model's own "
                   "GGUF, or the tokenizer.gguf record a directory written by edgeprune carries)")  # fmt: skip
    im = p.add_mutually_exclusive_group()
    im.add_argument("--imatrix", metavar="FILE", default=None,
                    help="weight the quantizer's rounding by this importance matrix (llama.cpp's GGUF imatrix, from "
                    "--imatrix-calib or llama-imatrix); K-quants and q4_0/q4_1/q5_0/q5_1")  # fmt: skip
    im.add_argument("--imatrix-calib", metavar="SOURCE", default=None,
                    help="compute the importance matrix from this calibration text (general, shakespeare, self or a file; "
                    "never the evaluation set) and keep it beside the output as NAME.imatrix.gguf")  # fmt: skip
    p.add_argument("--imatrix-windows", type=int, default=IMATRIX_WINDOWS, metavar="N", help=f"--imatrix-calib windows (default {IMATRIX_WINDOWS})")
    p.add_argument("--imatrix-seq-len", type=int, default=IMATRIX_SEQ_LEN, metavar="T", help=f"--imatrix-calib tokens per window (default {IMATRIX_SEQ_LEN})")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.export.gguf.api import export_gguf, preflight

    # Settle the cheap questions (type, output path, binary, source) before spending seconds loading the model.
    preflight(args.out, qtype=args.qtype, overwrite=args.overwrite, verify=args.verify, llama_quantize=args.llama_quantize,
              imatrix=args.imatrix, option="--overwrite")  # fmt: skip
    if args.imatrix_calib is not None:
        _check_imatrix_calib(args)
    source = _source_gguf(args.source_gguf)
    from edgeprune.models import load

    loaded = load(args.model)
    imatrix = args.imatrix
    if args.imatrix_calib is not None:
        from pathlib import Path

        from edgeprune.export.gguf.imatrix import compute_imatrix, write_imatrix

        im = compute_imatrix(loaded.model, loaded.tokenizer, args.imatrix_calib, n_windows=args.imatrix_windows,
                             seq_len=args.imatrix_seq_len, progress=True)  # fmt: skip
        imatrix = write_imatrix(Path(args.out).with_suffix(".imatrix.gguf"), im)
        print(f"imatrix: {im.tokens} tokens of {', '.join(im.datasets)} -> {imatrix}")
    report = export_gguf(  # source_gguf: the GGUF (or a directory's record of it) whose tokenizer keys are copied verbatim
        loaded.model, loaded.tokenizer, args.out, qtype=args.qtype, source_gguf=source or loaded.source_gguf,
        verify=args.verify, overwrite=args.overwrite, llama_quantize=args.llama_quantize, imatrix=imatrix,
    )  # fmt: skip
    if args.json:
        print(report.to_json(), end="")
        return 0
    types = ", ".join(f"{k} {v}" for k, v in sorted(report.tensor_types.items(), key=lambda kv: -kv[1]))
    print(f"wrote {report.path}: {report.arch}, {report.qtype}, {report.bytes / 1e6:.1f} MB, {report.n_tensors} tensors ({types})")
    for note in report.notes:
        print(f"note: {note}")
    if report.fallbacks:
        names = ", ".join(f["tensor"] for f in report.fallbacks[:4]) + (" ..." if len(report.fallbacks) > 4 else "")
        print(f"fallbacks: {len(report.fallbacks)} tensor(s) kept a wider type ({names})")
    v = report.verify
    if v:
        lm, tok = v["logits_vs_model"], v["tokenization"]
        line = f"verified in llama.cpp: max |dlogit| {lm['max_abs_diff']:.3g} vs torch, top-1 agreement {lm['top1_agreement']:.0%}"
        if tok:
            line += f", tokenization identical on {tok['identical']}/{tok['lines']} lines"
        print(line)
    else:
        print("not verified (--no-verify)")
    if report.imatrix:
        im = report.imatrix
        print(f"imatrix: {im['entries']} matrices weighted by {im['tokens']} tokens of {', '.join(im['datasets'])} ({im['file']})")
    print(f"report: {report.report_path}")
    return 0


def _check_imatrix_calib(args) -> None:
    """--imatrix-calib's cheap checks: a type that reads an imatrix, a calibration source, window sizes."""
    from edgeprune.data.calib import check_source
    from edgeprune.errors import EdgepruneError
    from edgeprune.export.gguf.imatrix import type_problems

    problems = type_problems(args.qtype.lower())
    if problems:
        raise EdgepruneError(problems[0])
    check_source(args.imatrix_calib)
    if args.imatrix_windows < 1 or args.imatrix_seq_len < 2:
        raise EdgepruneError("--imatrix-windows must be >= 1 and --imatrix-seq-len >= 2")


def _source_gguf(name: str | None):
    """The file --source-gguf names (a path or a built-in name), or None; a one-line error if missing."""
    from pathlib import Path

    from edgeprune.errors import EdgepruneError
    from edgeprune.models.builtin import builtin_path, is_builtin

    if name is None:
        return None
    if is_builtin(name):
        return builtin_path(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise EdgepruneError(f"--source-gguf {name}: no such file; pass the .gguf file (or built-in name) the model was made from")
    return path
