"""``edgeprune export onnx``'s int4 flag group and the ``export_onnx`` keywords it gives (absent flags
keep the exporter's defaults; its config rejects any of them with a --quant other than int4)."""

from __future__ import annotations


def add_int4_flags(p) -> None:
    from edgeprune.export.onnx.api import ACCURACY_LEVELS, DEFAULT_INT4_ALGO, INT4_ALGOS, INT4_EMBEDDINGS, INT4_LM_HEAD
    from edgeprune.export.onnx.api import INT4_MIXES, OnnxExportConfig

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


def int4_options(args) -> dict:
    """The int4 flags given on the command line, as export_onnx's keywords."""
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
