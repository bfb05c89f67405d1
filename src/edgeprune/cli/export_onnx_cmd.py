"""``edgeprune export onnx --model M [--quant int8|int8-dynamic|int4] --out DIR``: write and verify an ONNX decoder."""

from __future__ import annotations


def add_parser(sub) -> None:
    from edgeprune.export.onnx.api import BLOCK_SIZES, EXPORTERS, INT4_ALGOS, INT4_EMBEDDINGS, INT4_LM_HEAD, INT4_MIXES, QUANTS
    from edgeprune.export.onnx.api import ACCURACY_LEVELS, DEFAULT_INT4_ALGO, OnnxExportConfig

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
    q4 = p.add_argument_group("int4 options (with --quant int4; the defaults are measured in bench/results/onnx_roundtrip.md)")
    q4.add_argument("--int4-algo", default=None, metavar="A",
                    help=f"how the 4-bit codes are chosen: {', '.join(INT4_ALGOS)} (default {DEFAULT_INT4_ALGO}; rtn for "
                         "2:4-sparse weights, or with --int4-symmetric/--int4-asymmetric)")  # fmt: skip
    q4.add_argument("--int4-lm-head", default=None, metavar="P",
                    help=f"the lm_head's precision: {', '.join(INT4_LM_HEAD)} (default {OnnxExportConfig.int4_lm_head})")
    q4.add_argument("--int4-mix", default=None, metavar="M",
                    help=f"which projections keep 8 bits: {', '.join(INT4_MIXES)} (default {OnnxExportConfig.int4_mix})")
    q4.add_argument("--int4-edges", default=None, metavar="N",
                    help="the outer layers on each side that --int4-mix edges keeps at 8 bits (default ceil(layers / 6))")
    q4.add_argument("--int4-embedding", default=None, metavar="P",
                    help=f"the embedding table: {', '.join(INT4_EMBEDDINGS)} (default {OnnxExportConfig.int4_embedding})")
    q4.add_argument("--int4-accuracy-level", default=None, metavar="L",
                    help=f"MatMulNBits accuracy_level: {', '.join(map(str, ACCURACY_LEVELS))} (default "
                         f"{OnnxExportConfig.int4_accuracy_level}: int8 activations per block; 0: float)")  # fmt: skip
    sym = q4.add_mutually_exclusive_group()
    sym.add_argument("--int4-symmetric", dest="int4_symmetric", action="store_true", default=None,
                     help="rtn blocks without zero points (0 stays 0: keeps 2:4 patterns)")
    sym.add_argument("--int4-asymmetric", dest="int4_symmetric", action="store_false",
                     help="rtn blocks with a zero point each")
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


def int4_options(args) -> dict:
    """The int4 flags given on the command line, as export_onnx's keywords (absent flags keep its defaults;
    the config rejects any of them with a --quant other than int4)."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.export.onnx.api import ACCURACY_LEVELS

    opts = {name: getattr(args, name) for name in ("int4_algo", "int4_lm_head", "int4_mix", "int4_embedding", "int4_symmetric")}
    opts = {k: v.lower() if isinstance(v, str) else v for k, v in opts.items() if v is not None}
    if args.int4_edges is not None:
        try:
            opts["int4_edge_layers"] = int(args.int4_edges)
        except ValueError:
            raise EdgepruneError(f"--int4-edges must be a whole number of layers >= 0, got {args.int4_edges!r}") from None
    if args.int4_accuracy_level is not None:
        try:
            opts["int4_accuracy_level"] = int(args.int4_accuracy_level)
        except ValueError:
            raise EdgepruneError(f"--int4-accuracy-level must be one of {', '.join(map(str, ACCURACY_LEVELS))}, "
                                 f"got {args.int4_accuracy_level!r}") from None  # fmt: skip
    return opts
