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
    from edgeprune.cli.device_views import profile_lines
    from edgeprune.devices.profiles import get_device

    if args.name == "host" and args.refresh:
        from edgeprune.devices.host import host_profile

        profile = host_profile(refresh=True)
    else:
        profile = get_device(args.name)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2))
        return 0
    print("\n".join(profile_lines(profile)))
    return 0


def _predict(args) -> int:
    from edgeprune.cli.device_views import prediction_lines
    from edgeprune.describe import describe
    from edgeprune.devices.cost import artifact_cost, predict
    from edgeprune.devices.profiles import device_names, get_device

    cost = artifact_cost(describe(args.name))
    names = [args.target] if args.target else [n for n in device_names()]
    rows = [predict(get_device(n), cost, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens) for n in names]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    print("\n".join(prediction_lines(args.name, cost, rows, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens)))
    return 0
