"""``edgeprune export FORMAT ...``: one sub-verb per artifact format, each in its own module.

To add a format, write ``edgeprune/cli/export_<format>_cmd.py`` with ``add_parser(subparsers)``
(which registers the sub-verb and sets ``run``) and ``run(args) -> int``, then add one line to
FORMATS. The same contract as the top-level VERBS table in main.py.
"""

from __future__ import annotations

import importlib

# format -> module under edgeprune.cli
FORMATS = {
    "gguf": "edgeprune.cli.export_gguf_cmd",
    "onnx": "edgeprune.cli.export_onnx_cmd",
}


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model as a deployable artifact (GGUF for llama.cpp, ...)")
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for module in FORMATS.values():
        importlib.import_module(module).add_parser(formats)
