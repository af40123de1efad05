"""`python -m hyperonnx ...`: the command line, as the `hyperonnx` script runs it."""

import sys

from hyperonnx.cli import main

sys.exit(main())
