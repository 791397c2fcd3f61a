"""Minimal OData ``$filter`` parser: ``and``-joined comparisons and string functions.

Covers what message-trace clients send to Graph (``receivedDateTime ge X and ...``,
``id eq '...'``, ``contains(subject,'x')``) and to the Reporting Web Service
(``StartDate eq datetime'...'``). Anything else is rejected as the services do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMPARISONS = frozenset({"eq", "ne", "ge", "gt", "le", "lt"})
FUNCTIONS = {"contains": "contains", "startswith": "startswith", "endswith": "endswith"}

_COMPARISON_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s+([A-Za-z]+)\s+(.+?)\s*$", re.DOTALL)
_FUNCTION_RE = re.compile(r"^\s*([A-Za-z]+)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*(.+?)\s*\)\s*$", re.DOTALL)


class FilterError(ValueError):
    """The ``$filter`` expression is not understood."""


@dataclass(frozen=True)
class Clause:
    """One condition: ``prop op value``; ``op`` is a comparison or a string function name."""

    prop: str
    op: str
    value: str
    literal: str  # "string" | "datetime" | "bare"


def split_and(expression: str) -> list[str]:
    """Split on the ``and`` keyword outside quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    in_quote = False
    start = 0
    i = 0
    lowered = expression.lower()
    while i < len(expression):
        ch = expression[i]
        if ch == "'":
            in_quote = not in_quote
        elif not in_quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif depth == 0 and lowered.startswith(" and ", i):
                parts.append(expression[start:i])
                i += 5
                start = i
                continue
            elif depth == 0 and lowered.startswith(" or ", i):
                raise FilterError("the 'or' operator is not supported")
        i += 1
    if in_quote or depth != 0:
        raise FilterError("unbalanced quotes or parentheses")
    parts.append(expression[start:])
    return [p.strip() for p in parts if p.strip()]


def _literal(text: str) -> tuple[str, str]:
    text = text.strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("''", "'"), "string"
    lowered = text.lower()
    if lowered.startswith("datetime'") and text.endswith("'"):
        return text[len("datetime'") : -1], "datetime"
    if lowered.startswith("datetimeoffset'") and text.endswith("'"):
        return text[len("datetimeoffset'") : -1], "datetime"
    if not text or " " in text or "'" in text:
        raise FilterError(f"invalid literal {text!r}")
    return text, "bare"


def parse_filter(expression: str) -> list[Clause]:
    """Parse ``expression`` into clauses; raises :class:`FilterError`."""
    clauses: list[Clause] = []
    for part in split_and(expression):
        while part.startswith("(") and part.endswith(")"):
            part = part[1:-1].strip()
        func = _FUNCTION_RE.match(part)
        if func and func.group(1).lower() in FUNCTIONS:
            value, literal = _literal(func.group(3))
            clauses.append(Clause(func.group(2), FUNCTIONS[func.group(1).lower()], value, literal))
            continue
        comp = _COMPARISON_RE.match(part)
        if not comp or comp.group(2).lower() not in COMPARISONS:
            raise FilterError(f"invalid filter clause {part!r}")
        value, literal = _literal(comp.group(3))
        clauses.append(Clause(comp.group(1), comp.group(2).lower(), value, literal))
    if not clauses:
        raise FilterError("empty filter")
    return clauses
