"""The distribution name: README's install lines, pyproject and the code's hints name ours."""

import pathlib
import re
import tomllib

from hyperonnx.distribution import DISTRIBUTION, install_hint

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _install_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Install\n")
    return readme[start:readme.index("\n## ", start + 1)]


def _requirements(text: str) -> list[str]:
    """The requirement arguments of every `pip install` command in `text`."""
    found = []
    for command in re.findall(r"pip install ([^`\n#]+)", text):
        args = (arg.strip("\"'") for arg in command.split())
        found += [arg for arg in args if arg and not arg.startswith("-")]
    return found


def test_pyproject_names_the_distribution():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert DISTRIBUTION != "hyperonnx"  # taken on PyPI by an unrelated project


def test_readme_install_lines_name_our_distribution():
    requirements = _requirements(_install_section())
    assert len(requirements) >= 3
    for requirement in requirements:
        name = re.split(r"[\[<>=!~ @]", requirement, maxsplit=1)[0]
        assert name in (".", DISTRIBUTION), requirement  # the clone itself or our distribution
    assert any(r.startswith(DISTRIBUTION + "[") for r in requirements)


def test_no_hint_names_the_other_project():
    sources = [ROOT / "README.md", ROOT / "Makefile", *(ROOT / "hyperonnx").rglob("*.py"), *(ROOT / "docs").rglob("*.md")]
    for path in sources:
        for requirement in _requirements(path.read_text()):
            assert not re.match(r"hyperonnx($|\[)", requirement), f"{path}: pip install {requirement}"
    assert _requirements(install_hint("models")) == [f"{DISTRIBUTION}[models]"]


def test_onnxruntime_range_agrees():
    """pyproject's bounds, README, hyperonnx.runtime and the library's requested API version name
    the same oldest onnxruntime."""
    from hyperonnx.runtime import MIN_ORT_VERSION

    minimum = ".".join(map(str, MIN_ORT_VERSION))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["cpu"] == [f"onnxruntime>={minimum}"] and extras["gpu"] == [f"onnxruntime-gpu>={minimum}"]
    assert f"onnxruntime>={minimum}" in extras["test"]
    header = (ROOT / "custom_ops" / "include" / "hyperonnx" / "ort_api.h").read_text()
    assert f"constexpr uint32_t kOrtApiVersion = {MIN_ORT_VERSION[1]};" in header
    readme = " ".join(_install_section().split())
    assert f"onnxruntime {minimum} or later" in readme and f"ORT API version {MIN_ORT_VERSION[1]}" in readme
