"""The name this package is installed under: `hyperonnx` on PyPI is an unrelated project.

The import package stays `hyperonnx`; pip, README and every install hint name the distribution.
"""

DISTRIBUTION = "hyperonnx-compress"


def install_hint(extra: str) -> str:
    """The pip command that installs the package with `extra` (cpu, gpu, models, ...)."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'
