"""A small read-only model of the Bicep templates under infra/, parsed with pycep-parser.

The Bicep CLI cannot be installed on the development machines or in CI, so the infrastructure
tests parse the templates with pycep (the parser checkov uses) and evaluate the few expressions
they need (parameter defaults, variables, conditionals, string interpolation, host.json) here.

pycep represents both string literals and identifiers as plain ``str``; a string is read as a
symbol when the template declares a parameter, variable, resource or module of that name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


@cache
def _parser() -> BicepParser:
    return BicepParser()


def parse_file(path: Path) -> dict[str, Any]:
    return _parser().parse(file_path=path)


def unwrap(config: Any) -> tuple[dict[str, Any], dict[str, Any] | None, Any]:
    """Split a resource/module config into (body, loop, condition)."""
    loop = None
    condition = None
    if isinstance(config, dict) and "loop_type" in config:
        loop = config["loop_type"]
        condition = config.get("condition")
        config = config["config"]
    if isinstance(config, dict) and set(config) == {"condition", "config"}:
        condition = config["condition"]
        config = config["config"]
    return config, loop, condition


@dataclass
class Template:
    path: Path
    data: dict[str, Any]

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO).as_posix()

    @property
    def params(self) -> dict[str, Any]:
        return self.data.get("parameters", {})

    @property
    def variables(self) -> dict[str, Any]:
        return self.data.get("variables", {})

    @property
    def resources(self) -> dict[str, Any]:
        return self.data.get("resources", {})

    @property
    def modules(self) -> dict[str, Any]:
        return self.data.get("modules", {})

    @property
    def outputs(self) -> dict[str, Any]:
        return self.data.get("outputs", {})

    def resources_of(self, rtype: str, *, existing: bool = False) -> dict[str, dict[str, Any]]:
        """Symbol -> body of the resources of a type (declared ones unless existing=True)."""
        found = {}
        for symbol, res in self.resources.items():
            if res["type"].lower() == rtype.lower() and bool(res.get("existing")) == existing:
                found[symbol] = unwrap(res["config"])[0]
        return found

    def only(self, rtype: str) -> dict[str, Any]:
        found = self.resources_of(rtype)
        assert len(found) == 1, f"{self.rel}: expected one {rtype}, found {sorted(found)}"
        return next(iter(found.values()))

    def param_default(self, name: str) -> Any:
        assert name in self.params, f"{self.rel}: no parameter {name!r}"
        return self.params[name]["default"]

    def decorator(self, name: str, kind: str) -> Any:
        for deco in self.params[name].get("decorators", []):
            if deco["type"] == kind:
                return deco.get("argument")
        return None

    def module_body(self, symbol: str) -> dict[str, Any]:
        return unwrap(self.modules[symbol]["config"])[0]

    def module_file(self, symbol: str) -> Path:
        return (self.path.parent / self.modules[symbol]["detail"]["path"]).resolve()


@dataclass
class Templates:
    by_rel: dict[str, Template] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Templates:
        items = {}
        for path in sorted(INFRA.rglob("*.bicep")):
            tpl = Template(path, parse_file(path))
            items[tpl.rel] = tpl
        return cls(items)

    def __getitem__(self, rel: str) -> Template:
        return self.by_rel[rel]

    def __iter__(self):
        return iter(self.by_rel.values())

    @property
    def main(self) -> Template:
        return self.by_rel["infra/main.bicep"]

    def caller(self, tpl: Template) -> tuple[Template, str]:
        """The template and module symbol that deploy ``tpl``."""
        for other in self:
            for symbol in other.modules:
                if other.modules[symbol]["type"] == "local" and other.module_file(symbol) == tpl.path:
                    return other, symbol
        raise AssertionError(f"no template deploys {tpl.rel} as a module")


# ------------------------------------------------------------------------------------------
# Expression evaluation


class Unresolved(Exception):
    pass


def func_args(expr: dict[str, Any]) -> list[Any]:
    return [v for v in expr["function"].get("parameters", {}).values() if v is not None]


def accessor_path(expr: Any) -> list[Any]:
    """Flatten pycep's right-nested property accessors: a.b.c -> ['a', 'b', 'c']."""
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        ops = expr["operator"]["operands"]
        return accessor_path(ops["operand_1"]) + accessor_path(ops["operand_2"])
    return [expr]


_INTERPOLATION = re.compile(r"\$\{")


def _split_interpolations(text: str) -> list[tuple[bool, str]]:
    """'a${x}b' -> [(False, 'a'), (True, 'x'), (False, 'b')], braces balanced."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    while (match := _INTERPOLATION.search(text, pos)) is not None:
        parts.append((False, text[pos:match.start()]))
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        parts.append((True, text[match.end():i - 1]))
        pos = i
    parts.append((False, text[pos:]))
    return parts


@cache
def _parse_expression(source: str) -> Any:
    return _parser().parse(text=f"var x = {source}\n")["variables"]["x"]["value"]


class Evaluator:
    """Evaluates expressions of one template with parameter overrides and stand-ins for outputs."""

    def __init__(self, tpl: Template, params: dict[str, Any] | None = None,
                 symbols: dict[str, Any] | None = None) -> None:
        self.tpl = tpl
        self.overrides = params or {}
        self.symbols = symbols or {}

    def symbol(self, name: str, scope: dict[str, Any]) -> Any:
        if name in scope:
            return scope[name]
        if name in self.symbols:
            return self.symbols[name]
        if name in self.overrides:
            return self.overrides[name]
        if name in self.tpl.params:
            default = self.tpl.params[name]["default"]
            if default is None:
                raise Unresolved(f"parameter {name} has no default and no value")
            return self.eval(default, scope)
        if name in self.tpl.variables:
            return self.eval(self.tpl.variables[name]["value"], scope)
        raise Unresolved(name)

    def is_symbol(self, name: str, scope: dict[str, Any]) -> bool:
        return (name in scope or name in self.symbols or name in self.tpl.params
                or name in self.tpl.variables or name in self.tpl.resources or name in self.tpl.modules)

    def eval(self, expr: Any, scope: dict[str, Any] | None = None) -> Any:
        scope = scope or {}
        if isinstance(expr, bool | int | float) or expr is None:
            return expr
        if isinstance(expr, str):
            if self.is_symbol(expr, scope):
                return self.symbol(expr, scope)
            if "${" in expr:
                return "".join(
                    self._text(self.eval(_parse_expression(part), scope)) if is_expr else part
                    for is_expr, part in _split_interpolations(expr))
            return expr
        if isinstance(expr, list):
            return [self.eval(item, scope) for item in expr]
        if not isinstance(expr, dict):
            raise Unresolved(repr(expr))
        if "loop_type" in expr:
            loop = expr["loop_type"]
            if loop["type"] != "array":
                raise Unresolved(f"loop {loop['type']}")
            items = self.eval(loop["detail"]["array_name"], scope)
            name = loop["detail"]["item_name"]
            return [self.eval(expr["config"], {**scope, name: item}) for item in items]
        if "operator" in expr:
            return self._operator(expr["operator"], expr, scope)
        if "function" in expr:
            return self._function(expr, scope)
        return {key: self.eval(value, scope) for key, value in expr.items()}

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    def _operator(self, op: dict[str, Any], expr: dict[str, Any], scope: dict[str, Any]) -> Any:
        kind, ops = op["type"], op["operands"]
        if kind == "conditional":
            chosen = ops["true_value"] if self.eval(ops["condition"], scope) else ops["false_value"]
            return self.eval(chosen, scope)
        if kind == "equals":
            return self.eval(ops["operand_1"], scope) == self.eval(ops["operand_2"], scope)
        if kind == "not_equals":
            return self.eval(ops["operand_1"], scope) != self.eval(ops["operand_2"], scope)
        if kind == "not":
            return not self.eval(ops["bool_value"], scope)
        if kind == "and":
            return self.eval(ops["operand_1"], scope) and self.eval(ops["operand_2"], scope)
        if kind == "add":
            return self.eval(ops["operand_1"], scope) + self.eval(ops["operand_2"], scope)
        if kind == "multiply":
            return self.eval(ops["operand_1"], scope) * self.eval(ops["operand_2"], scope)
        if kind == "index_accessor":
            return self.eval(ops["operand_1"], scope)[self.eval(ops["operand_2"], scope)]
        if kind == "property_accessor":
            path = accessor_path(expr)
            value = self.eval(path[0], scope)
            for step in path[1:]:
                if isinstance(step, str):
                    value = value[step]
                elif isinstance(step, dict) and step.get("operator", {}).get("type") == "index_accessor":
                    inner = step["operator"]["operands"]
                    value = value[inner["operand_1"]][self.eval(inner["operand_2"], scope)]
                else:
                    raise Unresolved(f"accessor step {step!r}")
            return value
        raise Unresolved(f"operator {kind}")

    def _function(self, expr: dict[str, Any], scope: dict[str, Any]) -> Any:
        name = expr["function"]["type"]
        args = [self.eval(a, scope) for a in func_args(expr)]
        simple = {
            "empty": lambda v: len(v) == 0,
            "join": lambda items, sep: sep.join(items),
            "string": self._text,
            "to_lower": str.lower,
            "to_upper": str.upper,
            "replace": lambda s, old, new: s.replace(old, new),
            "split": lambda s, sep: s.split(sep),
            "int": int,
            "concat": lambda *xs: [x for part in xs for x in part] if isinstance(xs[0], list) else "".join(xs),
            "union": lambda *objs: {k: v for obj in objs for k, v in obj.items()},
        }
        if name in simple:
            return simple[name](*args)
        if name == "load_json_content":
            return json.loads((self.tpl.path.parent / args[0]).read_text())
        if name == "load_text_content":
            return (self.tpl.path.parent / args[0]).read_text()
        if name in self.symbols:
            return self.symbols[name]
        raise Unresolved(f"function {name}")


def guid_operands(name_expr: Any) -> dict[str, Any] | None:
    if isinstance(name_expr, dict) and name_expr.get("function", {}).get("type") == "guid":
        return name_expr["function"]["parameters"]
    return None


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def render(expr: Any, tpl: Template, names: frozenset[str] = frozenset()) -> str:
    """Render a parsed expression back to Bicep-like text, for readable assertions.

    Strings that name a symbol of ``tpl`` (or one of ``names``, e.g. loop variables) are
    rendered bare, other strings quoted.
    """

    def r(e: Any) -> str:
        if isinstance(e, bool):
            return str(e).lower()
        if e is None:
            return "null"
        if isinstance(e, int | float):
            return str(e)
        if isinstance(e, str):
            symbols = (tpl.params.keys() | tpl.variables.keys() | tpl.resources.keys()
                       | tpl.modules.keys() | names)
            return e if e in symbols else f"'{e}'"
        if isinstance(e, list):
            return "[" + ", ".join(r(x) for x in e) + "]"
        if "function" in e:
            return f"{_camel(e['function']['type'])}(" + ", ".join(r(a) for a in func_args(e)) + ")"
        if "operator" in e:
            kind, ops = e["operator"]["type"], e["operator"]["operands"]
            if kind == "property_accessor":
                path = accessor_path(e)
                text = r(path[0])
                for step in path[1:]:
                    if isinstance(step, str):
                        text += f".{step}"
                    elif step.get("operator", {}).get("type") == "index_accessor":
                        inner = step["operator"]["operands"]
                        text += f".{inner['operand_1']}[{r(inner['operand_2'])}]"
                    else:
                        text += f".{r(step)}"
                return text
            if kind == "index_accessor":
                return f"{r(ops['operand_1'])}[{r(ops['operand_2'])}]"
            if kind == "conditional":
                return f"{r(ops['condition'])} ? {r(ops['true_value'])} : {r(ops['false_value'])}"
            if kind == "not":
                return f"!{r(ops['bool_value'])}"
            infix = {"equals": "==", "not_equals": "!=", "and": "&&", "or": "||", "add": "+",
                     "multiply": "*", "substract": "-", "divide": "/"}
            if kind in infix:
                return f"{r(ops['operand_1'])} {infix[kind]} {r(ops['operand_2'])}"
            return f"{kind}({', '.join(r(v) for v in ops.values())})"
        return "{" + ", ".join(f"{k}: {r(v)}" for k, v in e.items()) + "}"

    return r(expr)
