"""Line and column of a few chosen nodes, without computing positions for every node.

libcst's ``PositionProvider`` records a range for every node of the module and
costs more than parsing it; a scan needs the positions of the handful of sites
it found. This runs the module's code generation once, tracking only the
current line and column, and records where the chosen nodes start.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterable, Iterator

import libcst as cst
from libcst._nodes.internal import CodegenState


@dataclasses.dataclass(frozen=False)
class _TrackingState(CodegenState):
    targets: frozenset = frozenset()
    found: dict = dataclasses.field(default_factory=dict)
    line: int = 1
    column: int = 0

    def add_indent_tokens(self) -> None:
        for token in self.indent_tokens:
            self.add_token(token)

    def add_token(self, value: str) -> None:
        newline = value.rfind("\n")
        if newline < 0:
            self.column += len(value)
        else:
            self.line += value.count("\n")
            self.column = len(value) - newline - 1

    def pop_trailing_newline(self) -> None:
        pass

    @contextmanager
    def record_syntactic_position(self, node, *, start_node=None, end_node=None) -> Iterator[None]:
        if node in self.targets and node not in self.found:
            self.found[node] = (self.line, self.column)
        yield


def start_positions(module: cst.Module, nodes: Iterable[cst.CSTNode]) -> dict[cst.CSTNode, tuple[int, int]]:
    """Return ``{node: (line, column)}`` (line 1-based, column 0-based) for each of ``nodes``."""
    targets = frozenset(nodes)
    if not targets:
        return {}
    state = _TrackingState(
        default_indent=module.default_indent, default_newline=module.default_newline, targets=targets
    )
    module._codegen(state)
    return state.found
