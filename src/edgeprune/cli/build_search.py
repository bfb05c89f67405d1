"""The budgeted side of ``edgeprune build``: ``--max-ppl-ratio`` / ``--max-bytes`` (with
``--min-decode-tps``, ``--max-memory``) turn the build into a search (``pipeline/search.py``)."""

from __future__ import annotations

import re

from edgeprune.errors import EdgepruneError


def add_search_args(p) -> None:
    g = p.add_argument_group("budgeted build (a search over plain quants and pruned models; see README)")
    g.add_argument("--max-ppl-ratio", type=float, default=None,
                   help="held-out perplexity / the dense model's, at most (e.g. 1.10): ships the fastest candidate meeting it")  # fmt: skip
    g.add_argument("--max-bytes", default=None, metavar="B", help="artifact size at most: bytes, or with K/M/G (MiB-style, 1024)")
    g.add_argument("--ratios", default="0.1,0.2,0.3", help="Adapt-Pruner ratios, one run (default 0.1,0.2,0.3; '' = plain quants only)")
    g.add_argument("--depths", default="3,6", help="decoder layers to remove, one model each (default 3,6; '' = none)")
    g.add_argument("--no-imatrix", dest="imatrix", action="store_false",
                   help="no importance-matrix candidates (default: GGUF types that read one get it)")
    g.add_argument("--types", default=None, help="comma-separated quant types (default: the target format's 4- to 8-bit types)")
    g.add_argument("--ppl-windows", type=int, default=4, help="held-out windows of 1024 tokens (default 4)")


def parse_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)i?b?\s*", str(text).lower())
    if not m:
        raise EdgepruneError(f"--max-bytes {text!r} is not a size: use bytes or a number with K, M or G (e.g. 120M)")
    return int(float(m.group(1)) * 1024 ** " kmg".index(m.group(2) or " "))


def run_search(args) -> int | None:
    """Run the search when the arguments ask for one (None: a recipe build)."""
    from edgeprune.pipeline.frontier import Bounds

    bounds = Bounds(max_ppl_ratio=args.max_ppl_ratio, max_bytes=parse_bytes(args.max_bytes), min_decode_tps=args.min_decode_tps,
                    max_memory_bytes=int(args.max_memory * 2**20) if args.max_memory else None)  # fmt: skip
    if not bounds.searches():
        return None
    if args.remote:
        raise EdgepruneError("a budgeted build measures speed on the host and predicts it elsewhere: --remote is not "
                             "supported with --max-ppl-ratio / --max-bytes yet; drop one of them")  # fmt: skip
    from edgeprune.pipeline.search import SearchConfig, candidate_specs, check_search, imatrix_types, search

    try:
        ratios = tuple(float(r) for r in args.ratios.split(",") if r.strip())
    except ValueError:
        raise EdgepruneError(f"--ratios {args.ratios!r}: use comma-separated fractions, e.g. 0.1,0.2") from None
    try:
        depths = tuple(int(d) for d in args.depths.split(",") if d.strip())
    except ValueError:
        raise EdgepruneError(f"--depths {args.depths!r}: use comma-separated layer counts, e.g. 3,6") from None
    types = tuple(t.strip() for t in args.types.split(",") if t.strip()) if args.types else None
    cfg = SearchConfig(ratios=ratios, depths=depths, types=types, ppl_windows=args.ppl_windows, imatrix=args.imatrix)
    fmt, types = check_search(args.target, cfg, bounds)  # one line, before any model loads
    if args.dry_run:
        specs = candidate_specs(types, ratios, depths, imatrix_types(fmt, types, cfg))
        print(f"search for {args.target} ({fmt}): {len(specs)} candidates, bounds {', '.join(bounds.describe())}")
        print(f"  types {', '.join(types)}; Adapt-Pruner ratios {', '.join(map(str, ratios)) or 'none'} (one run); "
              f"depths {', '.join(map(str, depths)) or 'none'}; imatrix {', '.join(imatrix_types(fmt, types, cfg)) or 'none'}")
        print("dry run: bounds and candidates are valid; no weights were loaded")
        return 0
    report = search(args.target, bounds, cfg, model=args.model, out=args.out, calib=args.calib, eval_data=args.eval_data,
                    resume=args.resume)  # fmt: skip
    print(report["verdict"])
    print(f"build finished: {args.out or 'dist/' + args.target}/report.md; shipped {report['shipped']}")
    return 0
