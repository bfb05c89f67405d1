"""``edgeprune devices [show NAME | predict ARTIFACT]``: device profiles and what a board can do."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("devices", help="list device profiles, show one, or predict an artifact's speed on them")
    p.add_argument("action", nargs="?", choices=["list", "show", "predict"], default="list")
    p.add_argument("name", nargs="?", help="device name (show) or artifact / model name (predict)")
    p.add_argument("--target", default=None, help="predict: one device (default: every device)")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--refresh", action="store_true", help="show host: measure this machine again")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.errors import EdgepruneError

    if args.action == "list":
        return _list(args)
    if not args.name:
        raise EdgepruneError(f"`edgeprune devices {args.action}` needs a name: e.g. `edgeprune devices {args.action} "
                             + ("jetson-orin-nano`" if args.action == "show" else "smollm2-135m`"))
    return _show(args) if args.action == "show" else _predict(args)


def _list(args) -> int:
    from edgeprune.devices.profiles import device_names, get_device

    if args.json:
        print(json.dumps(device_names()))
        return 0
    print(f"{'name':<22} description")
    for name in device_names():
        if name == "host":
            print(f"{'host':<22} this machine (measured on first use, then cached)")
        else:
            print(f"{name:<22} {get_device(name).description}")
    return 0


def _show(args) -> int:
    from edgeprune.devices.profiles import get_device

    if args.name == "host" and args.refresh:
        from edgeprune.devices.host import host_profile

        profile = host_profile(refresh=True)
    else:
        profile = get_device(args.name)
    d = profile.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    sources = d.pop("sources")
    for key, value in d.items():
        if key == "calibration":  # runtime -> type -> efficiencies
            value = "; ".join(f"{rt} {q}: bandwidth x{e.get('bw_efficiency', 0):.2f}, compute x{e.get('compute_efficiency', 0):.2f}"
                              for rt, types in value.items() for q, e in types.items()) or "- (defaults)"  # fmt: skip
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v if not isinstance(v, (list, tuple)) else '/'.join(v)}" for k, v in value.items())
        print(f"{key:<22} {value}")
    print(f"{'2:4 sparsity':<22} {profile.sparse_24_note}")
    print("sources:")
    for key, src in sources.items():
        print(f"  {key}: {src}")
    return 0


def _predict(args) -> int:
    from edgeprune.describe import describe
    from edgeprune.devices.cost import artifact_cost, predict
    from edgeprune.devices.profiles import device_names, get_device

    cost = artifact_cost(describe(args.name))
    names = [args.target] if args.target else [n for n in device_names()]
    rows = [predict(get_device(n), cost, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens) for n in names]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    print(f"{args.name}: {cost.weight_bytes / 2**20:.1f} MiB of {cost.quant} weights, "
          f"pp{args.prompt_tokens} / tg{args.gen_tokens} (roofline prediction, not a measurement)")  # fmt: skip
    print(f"| {'device':<20} | prefill tok/s | decode tok/s | TTFT ms | memory MiB | fits | decode bound |")
    print(f"|{'-' * 22}|---------------|--------------|---------|------------|------|--------------|")
    for r in rows:
        print(f"| {r.device:<20} | {r.prefill_tps:13.0f} | {r.decode_tps:12.1f} | {r.ttft_ms:7.0f} | "
              f"{r.memory_bytes / 2**20:10.0f} | {'yes' if r.fits else 'NO':<4} | {r.decode_bound:<12} |")  # fmt: skip
    return 0
