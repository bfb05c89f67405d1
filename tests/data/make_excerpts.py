"""Regenerate the test-data excerpts in this folder from a full data directory.

    python tests/data/make_excerpts.py [--src DIR] [--check]

``--src`` defaults to ``$EDGEPRUNE_DATA``, else ``../shared/data`` beside the checkout. Every
excerpt is the *first* records of its source file, byte for byte (see README.md), except the
Gutenberg books (``headtail``), which keep their first and last lines so their license footer is in. ``--check``
rewrites nothing: it exits 1 when an excerpt here differs from what the source gives.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# relative path -> (how it is cut, how many): the same relative layout as the full data directory.
#   lines:   the first n lines (one record per line)
#   header:  the header line, then the first n lines
#   tasks6:  the first n tasks of 6 lines each (llama.cpp HellaSwag text)
#   array:   the first n elements of a JSON array, written with the source's own layout (indent 4)
#   bytes:   at most n bytes, cut after the last complete line
#   docs:    the first n WikiExtractor records (through the n-th "</doc>" line)
#   headtail: at most n[0] bytes from the start and n[1] from the end, each cut at a line boundary
EXCERPTS = {
    "zeroshot/arc_easy/test.jsonl": ("lines", 100),  # 100: five items with "1".."4" labels, one with 3 choices
    "zeroshot/arc_challenge/test.jsonl": ("lines", 50),  # 50: one item with "1".."4" labels (record 45)
    "zeroshot/piqa/valid.jsonl": ("lines", 40),
    "zeroshot/piqa/valid-labels.lst": ("lines", 40),
    "zeroshot/hellaswag/val.llamacpp.txt": ("tasks6", 40),
    "zeroshot/boolq/val.jsonl": ("lines", 40),
    "zeroshot/winogrande/dev.llm_adapters.json": ("array", 40),
    "zeroshot/winogrande/dev-labels.lst": ("lines", 40),
    "zeroshot/openbookqa/test.tsv": ("header", 40),
    "calib/tiny_shakespeare.txt": ("bytes", 60_000),  # ~15k SmolLM2 tokens: >100 windows of 128
    # the general corpus: each format, for its reader's tests (tests/unit/test_general_data.py)
    "general/c4/c4_sample.jsonl": ("lines", 12),
    "general/wikipedia/AA/wiki_00": ("docs", 60),  # 60 records: 6 articles, 54 title-only stubs (skipped)
    "general/gutenberg/pg23.txt": ("headtail", (4_000, 20_000)),  # "*** START", then "End of the ...", "*** END", license
    "general/gutenberg/pg4657.txt": ("headtail", (4_000, 14_500)),  # old format: no END marker, header repeated at the end
}


def cut(raw: bytes, how: str, n) -> bytes:
    if how in ("lines", "header", "tasks6"):
        lines = raw.splitlines(keepends=True)
        count = {"lines": n, "header": n + 1, "tasks6": 6 * n}[how]
        if len(lines) < count:
            raise SystemExit(f"the source has {len(lines)} lines, fewer than {count}")
        return b"".join(lines[:count])
    if how == "array":
        rows = json.loads(raw)
        if json.dumps(rows, indent=4).encode() != raw:  # otherwise the excerpt's lines would not be the source's
            raise SystemExit("the JSON source is not laid out as json.dumps(indent=4): cut it by hand")
        return json.dumps(rows[:n], indent=4).encode()
    if how == "bytes":
        end = raw.rfind(b"\n", 0, n)
        return raw[: end + 1]
    if how == "docs":
        end = -1
        for _ in range(n):
            end = raw.index(b"</doc>\n", end + 1)
        return raw[: end + len(b"</doc>\n")]
    if how == "headtail":
        head, tail = n
        return cut(raw, "bytes", head) + raw[raw.index(b"\n", len(raw) - tail) + 1 :]
    raise ValueError(how)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("EDGEPRUNE_DATA") or str(REPO.parent / "shared" / "data")
    p.add_argument("--src", default=default, help=f"the full data directory (default {default})")
    p.add_argument("--check", action="store_true", help="compare with the excerpts here; write nothing")
    args = p.parse_args(argv)
    src, stale = Path(args.src), 0
    for rel, (how, n) in EXCERPTS.items():
        data = cut((src / rel).read_bytes(), how, n)
        dst = HERE / rel
        if args.check:
            same = dst.is_file() and dst.read_bytes() == data
            stale += not same
            print(f"{'ok   ' if same else 'STALE'} {rel}")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        print(f"{len(data):>7} B  sha256 {hashlib.sha256(data).hexdigest()[:16]}  {rel}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
