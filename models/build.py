#!/usr/bin/env python3
"""Build the real test/benchmark models into the cache ($HYPERONNX_CACHE or
~/.cache/hyperonnx/models): `python models/build.py [digits] [minilm] [--refresh]`.
The builders live in hyperonnx/models.py, shared with the tests and the benchmarks."""

import sys

from hyperonnx.models import main

if __name__ == "__main__":
    sys.exit(main())
