"""Implementations of the `hyperonnx` sub-commands (one module per verb); hyperonnx/cli.py wires
them to argparse."""
