"""Shared pieces of the step verbs' command lines."""

from __future__ import annotations

from pathlib import Path


def config_settings(config_path: str | None, config_cls, flags: dict) -> dict:
    """The settings of ``config_cls`` from a ``--config`` YAML file (validated), overridden by the
    flags that were given (``None``: not given). Raises EdgepruneError for a missing file."""
    from edgeprune.errors import EdgepruneError

    data: dict = {}
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise EdgepruneError(f"no such config file {path}: pass a {config_cls.kind or config_cls.STEP} YAML file")
        data = config_cls.from_yaml(path.read_text()).to_dict()
    data.update({k: v for k, v in flags.items() if v is not None})
    return data
