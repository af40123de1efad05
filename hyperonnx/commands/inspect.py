"""`hyperonnx inspect model.onnx`: what is compressed and how, on any model."""

from __future__ import annotations

import json

from .. import graph
from .. import format as fmt
from ..format import FormatError
from ._common import human


def run(args) -> int:
    model = graph.load(args.model, load_external_data=False)
    info = graph.inspect_model(model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print(args, info)
    invalid = info["invalid"]
    if invalid:  # listed, and the exit status says the model would be refused
        first = invalid[0]
        where = f"{first['graph']}:" if first["graph"] else ""
        raise FormatError(f"{len(invalid)} {fmt.OP_DOMAIN} node(s) break docs/FORMAT.md; first "
                          + (f"{where}{first['node']}: " if first["node"] else "") + first["problem"])
    return 0


def _print(args, info: dict) -> None:
    t = info["totals"]
    version = info["format_version"]
    print(f"{args.model}: " + (f"hyperonnx format version {version}, function fallback "
                               f"{'present' if info['function_fallback'] else 'absent'}"
                               if version else "not compressed by hyperonnx"))
    if info["compressed"]:
        print(f"\n{'name':<44} {'shape':<16} {'dtype':<8} {'orig':>10} {'seed':>10} {'bits/w':>6} "
              f"{'codec':<8} {'b':>3} settings")
        for c in info["compressed"]:
            name = (f"{c['graph']}:" if c["graph"] else "") + c["name"]
            print(f"{name[:44]:<44} {'x'.join(map(str, c['shape'])):<16} {c['dtype']:<8} "
                  f"{human(c['orig_bytes']):>10} {human(c['seed_bytes']):>10} {c['bits_per_weight']:>6.2f} "
                  f"{c['codec']:<8} {c['bits']:>3} {_settings(c)}" + ("  INVALID" if c["problem"] else ""))
    if info["raw_float"] and args.verbose:
        print(f"\nraw float tensors:")
        for r in info["raw_float"]:
            name = (f"{r['graph']}:" if r["graph"] else "") + r["name"]
            print(f"  {name[:60]:<60} {'x'.join(map(str, r['shape'])):<16} {r['dtype']:<8} {human(r['bytes']):>10}")
    print(f"\ncompressed: {t['compressed_tensors']} tensors, {human(t['compressed_weight_bytes'])} -> "
          f"{human(t['seed_bytes'])}; raw float: {t['raw_float_tensors']} tensors, {human(t['raw_float_bytes'])}")
    print(f"float weights: {human(t['weight_bytes_before'])} as stored originally -> "
          f"{human(t['weight_bytes_after'])} here")


def _settings(c: dict) -> str:
    """The codec's shape parameters: trajectory length and rings (winding), generator and group
    (lattice), window and group (trellis)."""
    if "window" in c:
        return f"L={c['window']} group={c['group']}"
    if "generator" in c:
        return f"g={c['generator']} group={c['group']}"
    return f"n={c['points']} C={c['rings']}"
