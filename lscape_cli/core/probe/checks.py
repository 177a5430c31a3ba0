"""CI gates: ``--check "lambda_max < 200"`` evaluated safely against a flat namespace of results.

Expressions may use numbers, names of scalar results (``lambda_max``, ``trace``, ``frobenius``, ...),
``+ - * / **``, ``abs``/``min``/``max``, comparisons (chains allowed) and ``and``/``or``/``not``. Nothing
else is evaluated (no attribute access, no calls beyond those three), so a check can never run code.

A check is untrusted input (a CI pipeline pastes it in), so it can neither hang nor exhaust the machine:

- its length (:data:`MAX_CHARS`) and bracket nesting (:data:`MAX_NESTING`) are checked on the text,
  before Python's parser sees it; the parsed tree's node count (:data:`MAX_NODES`) and depth
  (:data:`MAX_DEPTH`) are checked without recursion, before anything walks it recursively;
- every number is a float (``10**10**10`` is not exact integer arithmetic): an operation whose result is
  not a finite float (overflow, division by zero, a complex power) is refused with the part of the
  expression that produced it;
- the parts made of constants only are evaluated when the check is parsed, so ``lambda_max / 0 < 1`` is
  refused before any measurement runs.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Callable, Collection
from typing import Any, TypedDict

MAX_CHARS = 500  # longer than any sensible gate ("lambda_max < 200 and trace / frobenius > 3")
MAX_NESTING = 20  # brackets inside brackets
MAX_NODES = 200  # syntax-tree nodes
MAX_DEPTH = 60  # syntax-tree depth (each level is one recursive call of the evaluator)

_BIN: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: math.pow,
}
_CMP: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, tuple[Callable[..., float], int, int]] = {  # name -> (function, min args, max args)
    "abs": (abs, 1, 1),
    "min": (min, 1, 16),
    "max": (max, 1, 16),
}


class CheckError(ValueError):
    """A check expression that cannot be parsed or evaluated, or names an unknown/unavailable quantity."""


def _number(value: Any, node: ast.AST) -> float:
    """``value`` as a finite float, or :class:`CheckError` naming the sub-expression ``node``."""
    if isinstance(value, bool):
        raise CheckError(f"{ast.unparse(node)!r} is a truth value, not a number")
    try:
        number = float(value)
    except (OverflowError, TypeError) as exc:
        raise CheckError(f"{ast.unparse(node)!r} is not a finite number") from exc
    if not math.isfinite(number):
        raise CheckError(f"{ast.unparse(node)!r} is not a finite number ({number})")
    return number


def _arith(node: ast.BinOp, left: float, right: float) -> float:
    """One ``+ - * / **`` in floating point; overflow, division by zero and complex powers refused."""
    try:
        value = _BIN[type(node.op)](left, right)
    except ZeroDivisionError as exc:
        raise CheckError(f"division by zero in {ast.unparse(node)!r}") from exc
    except OverflowError as exc:
        raise CheckError(f"{ast.unparse(node)!r} overflows a float") from exc
    except ValueError as exc:  # math.pow of a negative base to a fractional power
        raise CheckError(f"{ast.unparse(node)!r} has no real value") from exc
    return _number(value, node)


def _eval(node: ast.AST, names: dict[str, float | None]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return _number(node.value, node)
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise CheckError(f"unknown quantity {node.id!r}; available: {', '.join(sorted(names)) or 'none'}")
        if names[node.id] is None:
            raise CheckError(f"quantity {node.id!r} has no finite value in this run")
        return _number(names[node.id], node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _eval(node.operand, names)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _number(_eval(node.operand, names), node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left = _number(_eval(node.left, names), node.left)
        return _arith(node, left, _number(_eval(node.right, names), node.right))
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
    if _is_call(node):
        fn, _, _ = _FUNCS[node.func.id]  # type: ignore[attr-defined]
        return fn(*(_number(_eval(a, names), a) for a in node.args))  # type: ignore[attr-defined]
    raise CheckError(f"unsupported syntax {ast.unparse(node)!r}")


def _is_call(node: ast.AST) -> bool:
    """A call of ``abs``/``min``/``max`` with a number of positional arguments they accept."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS):
        return False
    _, lo, hi = _FUNCS[node.func.id]
    if node.keywords or not lo <= len(node.args) <= hi or any(isinstance(a, ast.Starred) for a in node.args):
        raise CheckError(f"{node.func.id}() takes {lo} to {hi} numbers: {ast.unparse(node)!r}")
    return True


def _nesting(expr: str) -> int:
    """Deepest bracket nesting of the text (counted before parsing, so the parser never recurses deep)."""
    depth = deepest = 0
    for ch in expr:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _tree_size(tree: ast.AST) -> tuple[int, int]:
    """Node count and depth of ``tree``, walked with an explicit stack (no recursion)."""
    count, deepest, stack = 0, 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return count, deepest


def parse(expr: str) -> ast.Expression:
    """Parse a check within the size limits and fold its constant parts, raising :class:`CheckError`."""
    if len(expr) > MAX_CHARS:
        raise CheckError(f"check {_show(expr)} is longer than {MAX_CHARS} characters")
    if _nesting(expr) > MAX_NESTING:
        raise CheckError(f"check {_show(expr)} nests brackets more than {MAX_NESTING} deep")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", type(exc).__name__)
        raise CheckError(f"cannot parse check {_show(expr)}: {reason}") from exc
    count, depth = _tree_size(tree)
    if count > MAX_NODES or depth > MAX_DEPTH:
        raise CheckError(
            f"check {_show(expr)} has {count} nodes nested {depth} deep, more than {MAX_NODES} nodes or "
            f"{MAX_DEPTH} levels"
        )
    body = tree.body
    if not (isinstance(body, (ast.Compare, ast.BoolOp)) or isinstance(getattr(body, "op", None), ast.Not)):
        raise CheckError(f"check {_show(expr)} is not a comparison")
    for node in ast.walk(tree):
        _allowed(node, expr)
    _fold_constants(tree, expr)
    return tree


_NODES = (
    ast.Expression,
    ast.Compare,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.BinOp,
    ast.Name,
    ast.Load,
)
_OPS = (ast.Not, ast.USub, ast.UAdd, *_BIN, *_CMP)


def _allowed(node: ast.AST, expr: str) -> None:
    """Refuse, when parsing, any syntax the evaluator does not know (attributes, other calls, strings...)."""
    if isinstance(node, _NODES + _OPS) or (
        isinstance(node, ast.Constant) and type(node.value) in (int, float)
    ):
        return
    if isinstance(node, ast.Call) and _is_call(node):
        return
    raise CheckError(f"unsupported syntax {ast.unparse(node)!r} in check {_show(expr)}")


def _fold_constants(tree: ast.Expression, expr: str) -> None:
    """Evaluate every name-free part now, so ``10**10**10`` or ``x / 0`` fails before any work."""
    for node in ast.walk(tree):
        try:
            if isinstance(node, (ast.BinOp, ast.UnaryOp)) and _constant(node):
                _eval(node, {})
            elif _divides_by_constant(node) and _eval(node.right, {}) == 0:  # type: ignore[attr-defined]
                raise CheckError(f"division by zero in {ast.unparse(node)!r}")
        except CheckError as exc:
            raise CheckError(f"{exc} in check {_show(expr)}") from exc


def _divides_by_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _constant(node.right)


def _constant(node: ast.AST) -> bool:
    """No quantity names below ``node`` (function names do not count)."""
    return not any(isinstance(n, ast.Name) and n.id not in _FUNCS for n in ast.walk(node))


def _show(expr: str, limit: int = 80) -> str:
    """``expr`` quoted, shortened to ``limit`` characters (an error line stays one readable line)."""
    return repr(expr) if len(expr) <= limit else f"{expr[: limit - 20]!r}... ({len(expr)} characters)"


def referenced(expr: str) -> set[str]:
    """Names a check refers to (so a command can compute what the checks need)."""
    return {n.id for n in ast.walk(parse(expr)) if isinstance(n, ast.Name) and n.id not in _FUNCS}


def require(
    expr: str,
    source: Callable[[str], str | None],
    vocabulary: Collection[str],
    available: Collection[str] | None = None,
) -> None:
    """Refuse, before anything is measured, a check naming a quantity that cannot have a value.

    Args:
        expr: the check.
        source: what measures a quantity (e.g. ``"--trace"``), None for a name that is no quantity.
        vocabulary: the quantity names offered as corrections of a misspelt one.
        available: the quantities this run will measure; None checks the names' spelling only.

    Raises:
        CheckError: naming the check, the quantity, and a close name or the option that measures it.
    """
    for name in sorted(referenced(expr)):
        where = source(name)
        if where is None:
            close = difflib.get_close_matches(name, list(vocabulary), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CheckError(f"unknown quantity {name!r} in check {_show(expr)}{hint}")
        if available is not None and name not in available:
            raise CheckError(
                f"check {_show(expr)} uses {name!r}, which this run does not measure (it comes from {where})"
            )


class CheckRow(TypedDict):
    """:func:`evaluate`: one entry of a probe record's ``checks``."""

    expr: str
    passed: bool
    values: dict[str, float | None]


def evaluate(expr: str, names: dict[str, float | None]) -> CheckRow:
    """``{"expr", "passed", "values"}`` for one check against scalar ``names``.

    Raises:
        CheckError: the check does not parse, is not a comparison, names an unknown or non-finite
            quantity, or an operation in it has no finite float value (the message names the check).
    """
    tree = parse(expr)  # its errors name the check
    try:
        result = _eval(tree, names)
    except CheckError as exc:
        raise CheckError(f"{exc} in check {_show(expr)}") from exc
    if not isinstance(result, bool):
        raise CheckError(f"check {_show(expr)} is not a comparison (it gives {result!r})")
    used = referenced(expr)
    return {"expr": expr, "passed": result, "values": {k: names[k] for k in sorted(used)}}
