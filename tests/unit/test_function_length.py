"""No function in bridge/ is longer than MAX_LINES (from `def` to its last line), so each reads
as one step; a longer one is split into named steps or listed in ALLOWED with the reason."""

from __future__ import annotations

import ast
from pathlib import Path

import bridge

MAX_LINES = 60
ROOT = Path(bridge.__file__).parent

# qualified name ("package/module.py:Class.function") → why it may stay longer.
ALLOWED: dict[str, str] = {}


def function_lengths(source: str) -> dict[str, int]:
    """Qualified function name ("Class.method", "outer.inner") → lines from `def` to its end."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def all_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        for name, n in function_lengths(path.read_text()).items():
            lengths[f"{module}:{name}"] = n
    return lengths


def test_no_function_is_longer_than_max_lines() -> None:
    too_long = {
        name: n for name, n in all_lengths().items() if n > MAX_LINES and name not in ALLOWED
    }
    assert not too_long, f"functions over {MAX_LINES} lines (split them into steps): {too_long}"


def test_allowlist_entries_are_still_needed_and_explained() -> None:
    lengths = all_lengths()
    stale = {name for name in ALLOWED if lengths.get(name, 0) <= MAX_LINES}
    assert not stale, f"ALLOWED lists functions that no longer need it: {sorted(stale)}"
    assert all(reason.strip() for reason in ALLOWED.values()), ALLOWED


def test_lengths_are_counted_from_def_to_last_line() -> None:
    source = "class A:\n    def f(self):\n        x = 1\n\n        return x\n\ndef g():\n    pass\n"
    assert function_lengths(source) == {"A.f": 4, "g": 2}
