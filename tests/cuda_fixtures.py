"""Test cases for a GPU machine that cannot import hyperonnx: the cases' JSON metadata and arrays
in one .npz, written where hyperonnx runs (`python tests/test_cuda*.py --write-fixtures FILE`),
read back on the GPU machine through an environment variable. numpy and the standard library only."""

import json
import os

import numpy as np
import pytest


def save(path, cases: list[dict], arrays: tuple[str, ...]) -> int:
    """The cases to `path`: each case's `arrays` keys as arrays, the rest as JSON."""
    out = {"meta": np.frombuffer(json.dumps([{k: v for k, v in c.items() if k not in arrays}
                                             for c in cases]).encode(), dtype=np.uint8)}
    for i, c in enumerate(cases):
        for key in arrays:
            if key in c:
                out[f"{key}{i}"] = c[key]
    np.savez_compressed(path, **out)
    return len(cases)


def load(variable: str, arrays: tuple[str, ...]) -> list[dict]:
    """The cases saved at the path $`variable` names; skips the test when it names none."""
    path = os.environ.get(variable)
    if not path or not os.path.isfile(path):
        pytest.skip(f"hyperonnx cannot be imported and ${variable} is not set")
    data = np.load(path)
    cases = json.loads(data["meta"].tobytes())
    for i, c in enumerate(cases):
        for key in arrays:
            if f"{key}{i}" in data:
                c[key] = data[f"{key}{i}"]
    return cases
