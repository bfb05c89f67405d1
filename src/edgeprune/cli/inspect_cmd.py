"""``edgeprune inspect PATH``: architecture, parameters, per-layer widths, dtype, file size."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="describe a model directory, GGUF or ONNX file without loading it")
    p.add_argument("model", help="HF directory, .gguf or .onnx file, or a built-in name (e.g. smollm2-135m)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.describe import describe, format_description

    info = describe(args.model)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0
