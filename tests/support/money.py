"""The scan that finds floats holding money in Python source.

Floats are fine for seconds and rate-limit tokens; they are never fine for a price, a size
or an amount of money. The scan works on names, so it needs no imports of the code it reads.
"""

from __future__ import annotations

import ast
import re

#: Names that hold a price, a size or an amount of money. ``fee`` only as a word of its own:
#: a *feed* delay is a time.
MONEY_NAME = re.compile(
    r"(price|bid|ask|dollars|contracts|_fp$|^count$|size|pnl|balance|exposure|fees?(?![a-z])|"
    r"notional|"
    r"cost_dollars|max_loss)",
    re.IGNORECASE,
)


def _float_in(annotation: ast.expr | None) -> bool:
    """Whether ``float`` appears anywhere in a type annotation."""
    return annotation is not None and any(
        isinstance(node, ast.Name) and node.id == "float" for node in ast.walk(annotation)
    )


def float_money_offences(tree: ast.AST) -> list[str]:
    """Money-named parameters and variables typed float, and float() of money, in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and MONEY_NAME.search(node.arg) and _float_in(node.annotation):
            found.append(f"parameter {node.arg}")
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and MONEY_NAME.search(node.target.id)
            and _float_in(node.annotation)
        ):
            found.append(f"variable {node.target.id}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "float"
            and any(
                isinstance(sub, ast.Name | ast.Attribute)
                and MONEY_NAME.search(sub.id if isinstance(sub, ast.Name) else sub.attr)
                for arg in node.args
                for sub in ast.walk(arg)
            )
        ):
            found.append(f"float() of {ast.unparse(node.args[0])}")
    return found
