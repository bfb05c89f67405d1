"""The command line's parser class: usage errors in one line, blamed on the sub-command that got them."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: the bad value, the allowed ones (argparse
    names them) and where to read more, instead of a usage block that buries them. Subparsers are
    of this class too (``add_subparsers`` defaults ``parser_class`` to the parent's type), so
    ``edgeprune export gguf`` errors name their own ``--help``. ``--help`` is unchanged.
    """

    _verbs = None  # the sub-command action, to find the parser an unknown flag belongs to

    def add_subparsers(self, **kwargs):
        self._verbs = super().add_subparsers(**kwargs)
        return self._verbs

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")

    def parse_args(self, args=None, namespace=None):
        # argparse reports unknown flags from the top parser; blame the sub-command that got them
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self._chosen(namespace).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def _chosen(self, namespace) -> argparse.ArgumentParser:
        """The innermost sub-command parser that ``namespace`` went through (self if none)."""
        name = getattr(namespace, self._verbs.dest, None) if self._verbs is not None else None
        sub = self._verbs.choices.get(name) if name else None
        return sub._chosen(namespace) if isinstance(sub, OneLineParser) else self
