"""``edgeprune`` entry point: dispatch to one module per verb, turn EdgepruneError into exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from edgeprune import __version__
from edgeprune.cli.one_line_parser import OneLineParser
from edgeprune.errors import EdgepruneError

# verb -> module under edgeprune.cli; each module has `add_parser(subparsers)` and `run(args)`.
VERBS = {
    "inspect": "edgeprune.cli.inspect_cmd",
    "generate": "edgeprune.cli.generate_cmd",
    "eval": "edgeprune.cli.eval_cmd",
    "devices": "edgeprune.cli.devices_cmd",
    "prune": "edgeprune.cli.prune_cmd",
    "sparsify": "edgeprune.cli.sparsify_cmd",
    "profile": "edgeprune.cli.profile_cmd",
    "build": "edgeprune.cli.build_cmd",
    "export": "edgeprune.cli.export_cmd",
    "reconstruct": "edgeprune.cli.reconstruct_cmd",
    "depth": "edgeprune.cli.depth_cmd",
    "recover": "edgeprune.cli.recover_cmd",
    # later verbs add one line each here (eval, export, prune, sparsify, reconstruct, profile, build, devices)
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="edgeprune",
        description="Prune, quantize, export and profile language models for edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module in VERBS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except EdgepruneError as exc:
        print(f"edgeprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
