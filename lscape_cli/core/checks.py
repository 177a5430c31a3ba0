"""CI gates: ``--check "lambda_max < 200"`` evaluated safely against a flat namespace of results.

Expressions may use numbers, names of scalar results (``lambda_max``, ``trace``, ``frobenius``, ...),
``+ - * / **``, ``abs``/``min``/``max``, comparisons (chains allowed) and ``and``/``or``/``not``. Nothing
else is evaluated (no attribute access, no calls beyond those three), so a check can never run code.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_CMP: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max}


class CheckError(ValueError):
    """A check expression that cannot be parsed or names an unknown/unavailable quantity."""


def _eval(node: ast.AST, names: dict[str, float | None]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise CheckError(f"unknown quantity {node.id!r}; available: {', '.join(sorted(names)) or 'none'}")
        if names[node.id] is None:
            raise CheckError(f"quantity {node.id!r} has no finite value in this run")
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        v = _eval(node.operand, names)
        return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd) else not v)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        return _BIN[type(node.op)](_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.BoolOp):
        vals = [_eval(v, names) for v in node.values]
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare) and all(type(op) in _CMP for op in node.ops):
        left = _eval(node.left, names)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, names)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        return _FUNCS[node.func.id](*(_eval(a, names) for a in node.args))
    raise CheckError(f"unsupported syntax {ast.unparse(node)!r}")


def parse(expr: str) -> ast.Expression:
    """Parse a check, raising :class:`CheckError` with the reason."""
    try:
        return ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise CheckError(f"cannot parse check {expr!r}: {exc.msg}") from exc


def referenced(expr: str) -> set[str]:
    """Names a check refers to (so a command can compute what the checks need)."""
    return {n.id for n in ast.walk(parse(expr)) if isinstance(n, ast.Name) and n.id not in _FUNCS}


def evaluate(expr: str, names: dict[str, float | None]) -> dict[str, Any]:
    """``{"expr", "passed", "values"}`` for one check against scalar ``names``."""
    result = _eval(parse(expr), names)
    if not isinstance(result, bool):
        raise CheckError(f"check {expr!r} is not a comparison (it gives {result!r})")
    used = referenced(expr)
    return {"expr": expr, "passed": result, "values": {k: names[k] for k in sorted(used)}}
