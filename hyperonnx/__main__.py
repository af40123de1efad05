"""`python -m hyperonnx ...`: the command line, as the `hyperonnx` script runs it."""

import signal
import sys

_pending = []  # a signal before the command line's own handlers: noted, then answered by main


def _note(signum, _frame):
    _pending.append(signum)


for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, _note)

from hyperonnx import cli  # noqa: E402 - after the handlers

cli._PENDING.extend(_pending)
sys.exit(cli.main())
