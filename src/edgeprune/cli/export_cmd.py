"""``edgeprune export FORMAT ...``: one sub-verb per registered export format, each in its own module.

To add a format, write ``edgeprune/cli/export_<format>_cmd.py`` with ``add_parser(subparsers)``
(which registers the sub-verb and sets ``run``) and ``run(args) -> int``, and name it in the
format's row of ``edgeprune.export.registry`` (``cli``). The same contract as the top-level VERBS
table in main.py.
"""

from __future__ import annotations

import importlib

from edgeprune.export.registry import FORMATS


def add_parser(sub) -> None:
    kinds = ", ".join(f"{f.title} for {f.runtime}" for f in FORMATS.values())
    p = sub.add_parser("export", help=f"write a model as a deployable artifact ({kinds})")
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for fmt in FORMATS.values():
        importlib.import_module(fmt.cli).add_parser(formats)
