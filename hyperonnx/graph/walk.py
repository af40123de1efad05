"""Walking a model's graphs: the main graph and every subgraph (If / Loop / Scan bodies, at any
depth), and the names they define, so the passes can place nodes where tensors live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from onnx import AttributeProto, GraphProto, ModelProto


@dataclass
class Scope:
    """One graph and where it sits: `path` names it for reports ("" for the main graph, else e.g.
    "loop_node/body"); `parents` are the enclosing graphs, innermost last."""

    graph: GraphProto
    path: str
    parents: tuple[GraphProto, ...]

    @property
    def is_main(self) -> bool:
        return not self.parents


def scopes(model: ModelProto) -> Iterator[Scope]:
    """Every graph of the model, parents before children (model-local function bodies excluded:
    they hold no weights of their own)."""
    stack = [Scope(model.graph, "", ())]
    while stack:
        scope = stack.pop(0)
        yield scope
        for node in scope.graph.node:
            for attribute in node.attribute:
                label = f"{scope.path + '/' if scope.path else ''}{node.name or node.op_type}/{attribute.name}"
                if attribute.type == AttributeProto.GRAPH:
                    stack.append(Scope(attribute.g, label, scope.parents + (scope.graph,)))
                elif attribute.type == AttributeProto.GRAPHS:
                    for i, g in enumerate(attribute.graphs):
                        stack.append(Scope(g, f"{label}[{i}]", scope.parents + (scope.graph,)))


def all_names(model: ModelProto) -> set[str]:
    """Every value name used anywhere in the model (inputs, outputs, initializers, node ends)."""
    names: set[str] = set()
    for scope in scopes(model):
        g = scope.graph
        names.update(v.name for v in g.input)
        names.update(v.name for v in g.output)
        names.update(v.name for v in g.value_info)
        names.update(t.name for t in g.initializer)
        names.update(t.values.name for t in g.sparse_initializer)
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
    names.discard("")
    return names


class NameMaker:
    """Fresh value names that clash with nothing in the model."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def __call__(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            i += 1
            name = f"{base}.{i}"
        self.taken.add(name)
        return name


def default_opset(model: ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 0
