"""Helpers shared by the sub-commands: human-readable sizes, a stderr progress bar, sessions."""

from __future__ import annotations

import sys
import time


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} GB"


class Progress:
    """A progress bar over tensors on stderr: redrawn in place on a terminal; elsewhere a line every
    10 s once a run is long. Plain text, no dependency."""

    def __init__(self, label: str, stream=None, enabled: bool = True):
        self.label, self.stream, self.enabled = label, stream or sys.stderr, enabled
        self.tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.drawn = False

    def __call__(self, done: int, total: int, name: str, stage: str = "") -> None:
        """`done` of `total` tensors through `stage` ("" for the encode, e.g. "measured" for the
        allocator's probes)."""
        if not self.enabled or total == 0:
            return
        now = time.monotonic()
        what = f"tensors {stage}" if stage else "tensors"
        if self.tty:
            width = 30
            fill = int(width * done / total)
            text = f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} {stage} {name[:40]:<40}"
            self.stream.write(text)
            self.stream.flush()
            self.drawn = True
            if done == total:
                self.stream.write("\r" + " " * len(text) + "\r")
                self.stream.flush()
        elif now - self.last >= 10.0 or (done == total and now - self.start >= 10.0):
            # a log line every 10 s, and the end of each stage of a long run
            self.last = now
            print(f"{self.label}: {done}/{total} {what}, {now - self.start:.0f} s", file=self.stream, flush=True)


def library_path() -> str | None:
    """The built custom-op library, or None where hyperonnx.runtime or its library is missing."""
    try:
        from .. import runtime
        return runtime.get_library_path()
    except Exception:  # noqa: BLE001 - any failure means: run without the library
        return None


def session(model_or_path, use_library: bool = True):
    """An onnxruntime CPU session; registers the hyperonnx library when it is built."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: an error reaches the user once, as our one-line message
    lib = library_path() if use_library else None
    if lib:
        options.register_custom_ops_library(lib)
    source = model_or_path if isinstance(model_or_path, (str, bytes)) else str(model_or_path)
    if hasattr(model_or_path, "SerializeToString"):
        source = model_or_path.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]), lib
