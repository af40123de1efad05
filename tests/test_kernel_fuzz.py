"""Fuzz the CPU kernels through onnxruntime in a child process: >= 2,000 corrupted seeds and
attributes for DecodeWeights and 600 fused operators (MatMul / Gemm also with int8 compute) fed
fitting and unfitting activations;
onnxruntime may refuse them, but must never crash or hang, and must agree with the reference
decoder (tests/fuzz_kernel.py)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.mark.parametrize("seed", [0])
def test_fuzz_kernel_in_child_process(seed):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    try:
        child = subprocess.run([sys.executable, str(HERE / "fuzz_kernel.py"), "--cases", "2000", "--seed", str(seed)],
                               capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the fuzzer hung (no result in 300 s)")
    assert child.returncode in (0, 1), f"the fuzzer crashed (exit {child.returncode}):\n{child.stderr[-3000:]}"
    report = json.loads(child.stdout)
    assert report["cases"] >= 2000
    assert report["ok"] > 100 and report["refused"] > 100  # both outcomes exercised
    assert report["fused_cases"] >= 600 and report["fused_ok"] > 20 and report["fused_refused"] > 20
    assert report["fused_int8_ok"] > 10  # accuracy_level 4 runs on lattice and trellis weights
    assert report["disagreements"] == 0, json.dumps(report["failures"], indent=1)
    assert child.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 11))
def test_fuzz_kernel_more_seeds(seed):
    test_fuzz_kernel_in_child_process(seed)
