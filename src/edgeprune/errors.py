"""The one exception type users see.

Every anticipated failure (bad model name, corrupt file, unsupported architecture, ...) raises
:class:`EdgepruneError` with a one-line message that names the problem *and* the fix. The CLI turns
it into ``edgeprune: error: <message>`` and exit code 2, never a traceback.
"""


class EdgepruneError(Exception):
    """A user-facing error: a one-line message naming the problem and what to do about it."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep messages to one line: the CLI prints them as-is.
        super().__init__(" ".join(str(message).split()))
