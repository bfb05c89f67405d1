"""The step configs the step verbs' flags describe: ``--config`` YAML overridden by the flags given.

Every function raises EdgepruneError on a bad value, before any model is loaded.
"""

from __future__ import annotations

from edgeprune.cli.options import config_settings
from edgeprune.cli.sparsify_options import QUANTS


def _given(args, *names: str) -> dict:
    return {name: getattr(args, name) for name in names}


def prune_config(args):
    """``edgeprune prune``: the StructuredPrune step, its recovery training nested."""
    from edgeprune.compress.structured.config import StructuredPrune
    from edgeprune.errors import EdgepruneError

    data = config_settings(args.config, StructuredPrune,
                           _given(args, "target", "method", "criterion", "align", "stages", "calib_windows", "seed"))  # fmt: skip
    train = {"tokens": args.train_tokens, **_given(args, "kd_alpha", "lr", "batch_size"),
             "gradient_checkpointing": args.gradient_checkpointing or None}  # fmt: skip
    train = {k: v for k, v in train.items() if v is not None}
    if train:
        if "tokens" not in train and not data.get("train"):
            raise EdgepruneError("training flags need a budget: pass --train-tokens")
        data["train"] = {**(data.get("train") or {}), **train}
    return StructuredPrune.from_dict(data)


def reconstruct_config(args):
    """``edgeprune reconstruct``: the Reconstruct step."""
    from edgeprune.compress.reconstruct.local import Reconstruct

    flags = _given(args, "granularity", "blocks", "inputs", "trainable", "lora_rank", "loss", "lr", "epochs", "warmup",
                   "batch_size", "prune", "pattern", "autocast", "seed")  # fmt: skip
    return Reconstruct.from_dict(config_settings(args.config, Reconstruct, flags))


def recover_config(args):
    """``edgeprune recover``: the Recover step."""
    from edgeprune.compress.recover import Recover

    flags = _given(args, "tokens", "cpu_seconds", "recon_share", "recon_prune", "lr", "batch_size", "seed")
    if flags.get("cpu_seconds") and flags.get("tokens") is None:
        flags["tokens"] = 0  # a CPU budget alone: no token cap
    return Recover.from_dict(config_settings(args.config, Recover, flags))


def depth_config(args):
    """``edgeprune depth``: the Depth step."""
    from edgeprune.compress.depth.config import Depth

    flags = {**_given(args, "layers", "fraction", "score", "seed"),
             "protect_first": False if args.no_protect_first else None, "protect_last": False if args.no_protect_last else None}  # fmt: skip
    return Depth.from_dict(config_settings(args.config, Depth, flags))


def sparsify_steps(args):
    """``edgeprune sparsify``: ``(prune_or_train_step, quant_step)``; a one-shot prune carries its
    quantization nested (one pass; no second step), AST training has it as a step after."""
    from edgeprune.compress.sparse.ast import SparseTrain
    from edgeprune.compress.quant.weights import WeightQuant
    from edgeprune.compress.sparse.oneshot import NMPrune
    from edgeprune.errors import EdgepruneError

    quant = None
    if QUANTS[args.quant] is not None:
        quant = WeightQuant(bits=QUANTS[args.quant], group_size=args.group, symmetric=not args.asym,
                            method=args.quant_method, embedding=args.embedding)  # fmt: skip
    if args.train is None and args.config is None:
        for flag in ("tokens", "lr", "batch_size", "teacher"):
            if getattr(args, flag) is not None:
                raise EdgepruneError(f"--{flag.replace('_', '-')} is a training setting: add --train ast")
        if args.method == "none":
            raise EdgepruneError("--method none (keep the model's own N:M mask) is for AST training: add --train ast")
        return NMPrune(pattern=args.pattern, method=args.method, sparsity=args.sparsity, quant=quant), None
    flags = {"pattern": args.pattern, "init": args.method, **_given(args, "tokens", "lr", "batch_size", "seed")}
    data = {**config_settings(args.config, SparseTrain, flags), **({"slorb": False} if args.no_slorb else {})}
    step = SparseTrain.from_dict(data)
    if step.init == "none" and args.teacher is None and step.kd_weight > 0:
        raise EdgepruneError("--method none trains an already pruned model: pass its dense original as --teacher")
    return step, quant
