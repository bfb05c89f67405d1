"""``edgeprune sparsify``'s own flag groups: AST training (the SparseTrain step) and weight
quantization (the WeightQuant step, nested in a one-shot prune or after AST)."""

from __future__ import annotations

QUANTS = {"none": None, "int4": 4, "int8": 8}  # --quant -> bits


def add_training_flags(p) -> None:
    from edgeprune.cli.options import DEFAULT_TEXT
    from edgeprune.data.calib_policy import policy

    train = policy("sparse_train").training  # the defaults a build's sparse_train step draws with too
    p.add_argument("--train", default=None, choices=["ast"], help="recover with AST sparse training")
    p.add_argument("--tokens", type=int, default=None, help="AST token budget (default 300000)")
    p.add_argument("--train-data", default=None, help=f"AST training text (same choices as --calib, comma-separated to mix; default: {DEFAULT_TEXT})")
    p.add_argument("--train-seq-len", type=int, default=train.seq_len, help=f"AST window length in tokens (default {train.seq_len})")
    p.add_argument("--train-windows", type=int, default=None,
                   help=f"distinct AST windows per source (default: one epoch, at most {train.max_windows} in all)")  # fmt: skip
    p.add_argument("--lr", type=float, default=None, help="AST peak learning rate (default 2e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="AST sequences per optimizer step, all ranks (default 8)")
    p.add_argument("--no-slorb", action="store_true", help="AST without the SLoRB low-rank boost")


def add_quant_flags(p) -> None:
    p.add_argument("--quant", default="none", choices=list(QUANTS), help="weight quantization (default none)")
    p.add_argument("--group", type=int, default=64, help="quantization group size in input columns: 32, 64 or 128 (default 64)")
    p.add_argument("--asym", action="store_true", help="asymmetric quantization (default symmetric)")
    p.add_argument("--quant-method", default="gptq", choices=["gptq", "rtn"], help="error-compensating GPTQ or round-to-nearest")
    p.add_argument("--embedding", default="int8", choices=["int8", "keep"], help="with --quant: store the token embedding as int8 (default) or keep it float")
