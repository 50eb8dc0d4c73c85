"""Notebook runs: refuse a papermill parameter the notebook does not declare.

Papermill runs a notebook's `parameters` cell, then a cell it injects right after it
("# Parameters" and one assignment per `-p NAME VALUE`). A misspelt name (`-p PROFLE tiny`) is
only a warning from papermill, and the notebook would run on its defaults; `check_parameters`,
called by `pipeline.setup`, compares the names of the injected cell with those of the cell
before it, in the kernel's input history, and makes it an error.
"""
from __future__ import annotations

import ast
from typing import Sequence

INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill injects


def assigned_names(source: str) -> set[str]:
    """The names a cell assigns at its top level (`NAME = ...`, `NAME: type = ...`)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def unknown_parameters(history: Sequence[str]) -> tuple[list[str], list[str]]:
    """(injected names the parameters cell does not assign, the names it does assign), from
    the sources of the executed cells in order; ([], []) when papermill injected nothing."""
    for i in range(len(history) - 1, 0, -1):
        if history[i].lstrip().startswith(INJECTED_HEADER):
            declared = assigned_names(history[i - 1])
            return sorted(assigned_names(history[i]) - declared), sorted(declared)
    return [], []


def _kernel_history() -> list[str]:
    """The sources of the cells this IPython kernel ran so far ([] outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    shell = get_ipython()
    return list(shell.history_manager.input_hist_raw) if shell is not None else []


def check_parameters(history: Sequence[str] | None = None) -> None:
    """ValueError naming every papermill parameter that this notebook does not declare in its
    `parameters` cell (no-op outside a papermill run)."""
    unknown, declared = unknown_parameters(_kernel_history() if history is None else history)
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}: this notebook's parameters "
                         f"cell declares {declared}; check the spelling of papermill's -p NAME")
