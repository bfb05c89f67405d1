"""``edgeprune export onnx --model M [--quant int8|int8-dynamic|int4] --out DIR``: write and verify an ONNX decoder."""

from __future__ import annotations

from edgeprune.cli.onnx_int4_options import add_int4_flags, int4_options


def add_parser(sub) -> None:
    from edgeprune.export.onnx.api import BLOCK_SIZES, EXPORTERS, QUANTS

    p = sub.add_parser(
        "onnx",
        help="write an ONNX decoder with a KV cache for onnxruntime, then run it there and compare with torch",
        description="One graph serves prefill and decode (inputs input_ids, attention_mask, position_ids, "
        "past_key_values.N.key/value; outputs logits, present.N.key/value), per-layer widths included. "
        "The folder appears only once the graph has passed onnx.checker and the onnxruntime-vs-torch check; "
        "it holds model.onnx, export_report.json, genai_config.json and the tokenizer.",
    )
    p.add_argument("--model", default=None, help="HF directory, .gguf file or built-in name (default: smollm2-135m)")
    p.add_argument("--out", required=True, help="the folder to write (must not exist, unless --overwrite)")
    p.add_argument("--quant", default="fp32", metavar="Q", help=f"one of {', '.join(QUANTS)} (default fp32)")
    p.add_argument("--block-size", type=int, default=32, metavar="N",
                   help=f"int8/int4 weights per scale, one of {', '.join(map(str, BLOCK_SIZES))} (default 32)")  # fmt: skip
    add_int4_flags(p)
    p.add_argument("--exporter", default="dynamo", choices=EXPORTERS,
                   help="torch.onnx exporter (default dynamo, falling back to torchscript if it fails)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads for the check (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the onnxruntime-vs-torch check")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.export.onnx.api import export_onnx, preflight

    # Settle the cheap questions (settings, output folder, onnx installed) before spending seconds loading the model.
    int4 = int4_options(args)
    preflight(args.out, quant=args.quant, block_size=args.block_size, exporter=args.exporter,
              verify=args.verify, overwrite=args.overwrite, option="--overwrite", **int4)  # fmt: skip
    from edgeprune.models import load

    loaded = load(args.model)
    report = export_onnx(
        loaded.model, args.out, tokenizer=loaded.tokenizer, quant=args.quant, block_size=args.block_size,
        exporter=args.exporter, verify=args.verify, overwrite=args.overwrite, threads=args.threads, **int4,
    )  # fmt: skip
    if args.json:
        print(report.to_json(), end="")
        return 0
    quant = report.quant + (f" (block {report.block_size})" if report.block_size else "")
    print(
        f"wrote {report.path}: {report.architecture}, {report.num_layers} layers, {quant}, "
        f"{report.bytes / 1e6:.1f} MB, {report.exporter} exporter, opset {report.opset}"
    )
    for note in report.notes:
        print(f"note: {note}")
    v = report.verify
    if v:
        print(
            f"verified in onnxruntime: max relative logit difference vs torch {v.prefill_max_rel_diff:.2e} (prefill), "
            f"{v.decode_max_rel_diff:.2e} ({v.decode_steps} decode steps), top-1 agreement {v.argmax_agreement:.0%}"
        )
    else:
        print("not verified (--no-verify)")
    print(f"report: {report.report_path}")
    return 0

