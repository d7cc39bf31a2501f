"""A small, safe expression language for offer eligibility and customer segment rules.

Banks write rules such as::

    cash_flow.balance >= 1000 and profile.income_band in ['high', 'very_high']
    'checking' in profile.products_held and not behavior.abandoned_application

A rule is compiled once by `parse_expression` into an immutable `Expression` (a tree of small
node objects, turned into nested closures) and then evaluated against a customer's context on
every decision. User text is never handed to Python's `eval`, `compile` or `ast`: a
hand-written tokenizer and recursive-descent parser accept exactly the grammar below and
nothing else, so there are no function calls, attribute access, indexing or arithmetic.

Grammar (EBNF; keywords are case-sensitive and lower-case)::

    expression  = disjunction ;
    disjunction = conjunction , { "or" , conjunction } ;
    conjunction = negation , { "and" , negation } ;
    negation    = "not" , negation | primary ;
    primary     = "(" , disjunction , ")" | comparison ;
    comparison  = value , [ compare_op , value | [ "not" ] , "in" , value ] ;
    compare_op  = "==" | "!=" | "<" | "<=" | ">" | ">=" ;
    value       = field | literal | list ;
    list        = "[" , [ literal , { "," , literal } ] , "]" ;
    literal     = number | string | "true" | "false" ;
    field       = name , { "." , segment } ;
    name        = ( letter | "_" ) , { letter | digit | "_" } ;
    segment     = ( letter | digit | "_" ) , { letter | digit | "_" } ;
    number      = [ "-" ] , ( digits , [ "." , digits ] | "." , digits ) ,
                  [ ( "e" | "E" ) , [ "+" | "-" ] , digits ] ;
    string      = "'" , { character | escape } , "'"
                | '"' , { character | escape } , '"' ;
    escape      = "\\" , ( "'" | '"' | "\\" | "n" | "t" ) ;

Letters and digits are ASCII; any whitespace separates tokens. Precedence, from tightest:
comparisons, ``not``, ``and``, ``or``; so ``not x == 1 and y`` means ``(not (x == 1)) and y``.
A comparison without an operator must be a field (true iff its value is the boolean ``true``)
or ``true``/``false``.
Some rules that can never be true are rejected when parsing: ordering (``<`` ...) a boolean or
a list literal, a list on the left of ``in``, and a single literal on the right of ``in``.

Semantics:

* **Missing fields.** A field that is absent from the context (or whose value is ``None``)
  makes every comparison and membership test that reads it false -- including ``!=`` and
  ``not in``. A bare missing field is false too. ``not`` is plain boolean negation of its
  operand's result, so ``not (x == 1)`` is true when ``x`` is missing, while ``x != 1`` and
  ``x not in [1]`` are false. Write ``not (...)`` to treat "missing" as "does not match".
* **Types.** Values are numbers (``int`` and ``float`` compare freely), strings, booleans and
  lists of those. A boolean is not a number: ``true == 1`` is false. Comparing values of
  different types is false for every operator (``'a' != 1`` is false as well), never an
  error. Ordering works on numbers and on strings (lexicographic). ``==``/``!=`` on lists
  compare element-wise. ``x in L`` needs a single value ``x`` and a list ``L`` (a list
  literal or a list-valued field); list items of another type simply do not match, so
  ``x not in L`` is true for them.
* **Limits.** At most 2000 characters, 32 levels of nesting (each ``(`` and each ``not``
  counts one level) and 200 items per list literal; anything beyond raises `ExpressionError`.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, cast

from bandit_platform.domain.errors import ExpressionError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_LIST_ITEMS",
    "Clause",
    "Expression",
    "RuleExplanation",
    "explain_rule",
    "parse_expression",
]

#: Longest accepted source text, in characters.
MAX_LENGTH: Final = 2000
#: Deepest accepted nesting of parentheses and `not`.
MAX_DEPTH: Final = 32
#: Most items accepted in one list literal.
MAX_LIST_ITEMS: Final = 200

# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_Kind: TypeAlias = Literal["number", "string", "boolean", "list"]


class _Missing:
    """Type of the sentinel returned for a field the context does not hold."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()

_KIND_BY_TYPE: Final[dict[type[object], _Kind]] = {
    int: "number",
    float: "number",
    bool: "boolean",
    str: "string",
    list: "list",
    tuple: "list",
}


def _kind_of(value: object) -> _Kind | None:
    """The comparison type of a value, or None if it is missing or unsupported."""
    kind = _KIND_BY_TYPE.get(type(value))
    if kind is not None:
        return kind
    if value is None or value is _MISSING:
        return None
    if isinstance(value, str):
        return "string"
    if isinstance(value, numbers.Real):  # float/int subclasses, numpy scalars, Fraction
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    return None


def _equal(left: object, left_kind: _Kind, right: object) -> bool:
    """Typed equality: values of different kinds are never equal (so `true` != 1)."""
    if _kind_of(right) != left_kind:
        return False
    if left_kind == "list":
        return _lists_equal(cast(Sequence[object], left), cast(Sequence[object], right))
    return bool(left == right)


def _lists_equal(left: Sequence[object], right: Sequence[object]) -> bool:
    if len(left) != len(right):
        return False
    for a, b in zip(left, right, strict=True):
        kind = _kind_of(a)
        if kind is None or not _equal(a, kind, b):
            return False
    return True


def _quote(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    )
    return f"'{escaped}'"


def _format(value: object, limit: int = 60) -> str:
    """A value in expression syntax, shortened to about `limit` characters."""
    text = _format_full(value, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_full(value: object, depth: int) -> str:
    if value is _MISSING or value is None:
        return "missing"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, list | tuple) and depth < 3:
        items = [_format_full(item, depth + 1) for item in value[:20]]
        if len(value) > 20:
            items.append("...")
        return "[" + ", ".join(items) + "]"
    return f"<{type(value).__name__}>"


def _verdict(result: bool) -> str:
    return "true" if result else "false"


# --------------------------------------------------------------------------------------------
# Compiled tree
# --------------------------------------------------------------------------------------------


class _Operand:
    """A side of a comparison: a field reference or a literal."""

    __slots__ = ("position",)

    def __init__(self, position: int) -> None:
        self.position = position

    def get(self, context: Mapping[str, object]) -> object:
        """The operand's value in `context` (`_MISSING` for an absent field)."""
        raise NotImplementedError

    def render(self) -> str:
        """The operand in canonical expression syntax."""
        raise NotImplementedError


class _Field(_Operand):
    __slots__ = ("name",)

    def __init__(self, name: str, position: int) -> None:
        super().__init__(position)
        self.name = name

    def get(self, context: Mapping[str, object]) -> object:
        return context.get(self.name, _MISSING)

    def render(self) -> str:
        return self.name


class _Literal(_Operand):
    __slots__ = ("kind", "value")

    def __init__(self, value: object, kind: _Kind, position: int) -> None:
        super().__init__(position)
        self.value = value
        self.kind: _Kind = kind

    def get(self, context: Mapping[str, object]) -> object:
        return self.value

    def render(self) -> str:
        return _format(self.value)

    def describe(self) -> str:
        """E.g. "number 3", for error messages."""
        return f"{self.kind} {self.render()}"


class _ListLiteral(_Literal):
    __slots__ = ("by_kind",)

    def __init__(self, items: tuple[object, ...], position: int) -> None:
        super().__init__(items, "list", position)
        groups: dict[_Kind, set[object]] = {}
        for item in items:
            kind = _kind_of(item)
            assert kind is not None  # literals always have a kind
            groups.setdefault(kind, set()).add(item)
        # Items are grouped by kind so that set lookup cannot confuse `true` with 1.
        self.by_kind: dict[_Kind, frozenset[object]] = {
            kind: frozenset(group) for kind, group in groups.items()
        }


_Predicate: TypeAlias = Callable[[Mapping[str, object]], bool]


class _Node:
    """A parsed boolean (sub)expression.

    `evaluate` is the reference implementation of the semantics (used by `explain`);
    `compile` returns an equivalent closure with fast paths for the common shapes, which is
    what `Expression.evaluate` runs.
    """

    __slots__ = ()

    def evaluate(self, context: Mapping[str, object]) -> bool:
        """The node's truth value in `context`."""
        raise NotImplementedError

    def compile(self) -> _Predicate:
        """A closure computing `evaluate`."""
        return self.evaluate

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        """Append one line per leaf condition, in source order, to `out`."""
        raise NotImplementedError


class _Leaf(_Node):
    __slots__ = ()


class _Constant(_Leaf):
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def evaluate(self, context: Mapping[str, object]) -> bool:
        return self.value

    def compile(self) -> _Predicate:
        value = self.value
        return lambda context: value

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        out.append(f"{_verdict(self.value)} -> {_verdict(self.value)}")


class _Truthy(_Leaf):
    """A bare field used as a condition: true iff its value is the boolean `true`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def evaluate(self, context: Mapping[str, object]) -> bool:
        return context.get(self.name) is True

    def compile(self) -> _Predicate:
        name = self.name
        return lambda context: context.get(name) is True

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        value = context.get(self.name, _MISSING)
        if value is _MISSING or value is None:
            detail = f"{self.name} is missing"
        elif value is True or value is False:
            detail = _format(value)
        else:
            detail = f"{_format(value)} (not a boolean)"
        out.append(f"{self.name}: {detail} -> {_verdict(value is True)}")


_ORDERING: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    **_ORDERING,
}
#: Exact value types for which a comparison with a literal of this kind may use the plain
#: Python operator (anything else takes the general path).
_FAST_TYPES: Final[dict[_Kind, tuple[type[object], ...]]] = {
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
}


def _missing_fields(operands: tuple[_Operand, ...], values: tuple[object, ...]) -> list[str]:
    return [
        f"{operand.render()} is missing"
        for operand, value in zip(operands, values, strict=True)
        if isinstance(operand, _Field) and (value is _MISSING or value is None)
    ]


class _Compare(_Leaf):
    __slots__ = ("_ordering", "left", "op", "right")

    def __init__(self, left: _Operand, op: str, right: _Operand) -> None:
        self.left = left
        self.op = op
        self.right = right
        self._ordering = _ORDERING.get(op)

    def evaluate(self, context: Mapping[str, object]) -> bool:
        left = self.left.get(context)
        right = self.right.get(context)
        kind = _kind_of(left)
        if kind is None or kind != _kind_of(right):
            return False
        if self._ordering is not None:
            if kind == "number" or kind == "string":
                return bool(self._ordering(left, right))
            return False
        equal = _equal(left, kind, right)
        return equal if self.op == "==" else not equal

    def compile(self) -> _Predicate:
        left, right = self.left, self.right
        if not (isinstance(left, _Field) and isinstance(right, _Literal)):
            return self.evaluate
        fast_types = _FAST_TYPES.get(right.kind)
        if fast_types is None:
            return self.evaluate
        name, constant, function, general = (
            left.name,
            right.value,
            _OPERATORS[self.op],
            self.evaluate,
        )

        def field_vs_literal(context: Mapping[str, object]) -> bool:
            value = context.get(name)
            if type(value) in fast_types:
                return function(value, constant)
            return general(context)

        return field_vs_literal

    def render(self) -> str:
        return f"{self.left.render()} {self.op} {self.right.render()}"

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        left = self.left.get(context)
        right = self.right.get(context)
        result = self.evaluate(context)
        missing = _missing_fields((self.left, self.right), (left, right))
        if missing:
            detail = ", ".join(missing)
        else:
            detail = f"{_format(left)} {self.op} {_format(right)}"
            left_kind, right_kind = _kind_of(left), _kind_of(right)
            if left_kind is None or right_kind is None or left_kind != right_kind:
                detail += f" (type mismatch: {left_kind or 'unsupported'} vs "
                detail += f"{right_kind or 'unsupported'})"
            elif self._ordering is not None and left_kind not in ("number", "string"):
                detail += f" ({left_kind}s are not ordered)"
        out.append(f"{self.render()}: {detail} -> {_verdict(result)}")


class _Membership(_Leaf):
    """`value in container` / `value not in container`."""

    __slots__ = ("_literal", "left", "negate", "right")

    def __init__(self, left: _Operand, right: _Operand, negate: bool) -> None:
        self.left = left
        self.right = right
        self.negate = negate
        self._literal = right if isinstance(right, _ListLiteral) else None

    def evaluate(self, context: Mapping[str, object]) -> bool:
        value = self.left.get(context)
        kind = _kind_of(value)
        if kind is None or kind == "list":
            return False
        if self._literal is not None:
            group = self._literal.by_kind.get(kind)
            found = group is not None and value in group
        else:
            container = self.right.get(context)
            if _kind_of(container) != "list":
                return False
            found = any(_equal(value, kind, item) for item in cast(Sequence[object], container))
        return found != self.negate

    def compile(self) -> _Predicate:
        left, right, negate, general = self.left, self.right, self.negate, self.evaluate
        if isinstance(left, _Field) and self._literal is not None:
            name, groups = left.name, self._literal.by_kind

            def field_in_list(context: Mapping[str, object]) -> bool:
                value = context.get(name)
                kind = _kind_of(value)
                if kind is None or kind == "list":
                    return False
                group = groups.get(kind)
                return (group is not None and value in group) != negate

            return field_in_list
        if isinstance(left, _Literal) and left.kind == "string" and isinstance(right, _Field):
            text, container_name = left.value, right.name

            def text_in_field(context: Mapping[str, object]) -> bool:
                container = context.get(container_name)
                if type(container) is list:
                    return (text in container) != negate
                return general(context)

            return text_in_field
        return general

    def render(self) -> str:
        op = "not in" if self.negate else "in"
        return f"{self.left.render()} {op} {self.right.render()}"

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        value = self.left.get(context)
        container = self.right.get(context)
        result = self.evaluate(context)
        missing = _missing_fields((self.left, self.right), (value, container))
        if missing:
            detail = ", ".join(missing)
        else:
            detail = _format(value)
            if self._literal is None:
                detail += f" {'not in' if self.negate else 'in'} {_format(container)}"
            kind = _kind_of(value)
            if kind is None or kind == "list":
                detail += " (not a single value)"
            elif _kind_of(container) != "list":
                detail += " (not a list)"
        out.append(f"{self.render()}: {detail} -> {_verdict(result)}")


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node) -> None:
        self.operand = operand

    def evaluate(self, context: Mapping[str, object]) -> bool:
        return not self.operand.evaluate(context)

    def compile(self) -> _Predicate:
        operand = self.operand.compile()
        return lambda context: not operand(context)

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        self.operand.explain(context, out)


class _And(_Node):
    __slots__ = ("operands",)

    def __init__(self, operands: tuple[_Node, ...]) -> None:
        self.operands = operands

    def evaluate(self, context: Mapping[str, object]) -> bool:
        return all(operand.evaluate(context) for operand in self.operands)

    def compile(self) -> _Predicate:
        operands = tuple(operand.compile() for operand in self.operands)
        if len(operands) == 2:
            first, second = operands
            return lambda context: first(context) and second(context)

        def conjunction(context: Mapping[str, object]) -> bool:
            for operand in operands:  # noqa: SIM110 - faster than all() on the hot path
                if not operand(context):
                    return False
            return True

        return conjunction

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        for operand in self.operands:
            operand.explain(context, out)


class _Or(_Node):
    __slots__ = ("operands",)

    def __init__(self, operands: tuple[_Node, ...]) -> None:
        self.operands = operands

    def evaluate(self, context: Mapping[str, object]) -> bool:
        return any(operand.evaluate(context) for operand in self.operands)

    def compile(self) -> _Predicate:
        operands = tuple(operand.compile() for operand in self.operands)
        if len(operands) == 2:
            first, second = operands
            return lambda context: first(context) or second(context)

        def disjunction(context: Mapping[str, object]) -> bool:
            for operand in operands:  # noqa: SIM110 - faster than any() on the hot path
                if operand(context):
                    return True
            return False

        return disjunction

    def explain(self, context: Mapping[str, object], out: list[str]) -> None:
        for operand in self.operands:
            operand.explain(context, out)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

_TokenKind: TypeAlias = Literal[
    "number",
    "string",
    "name",
    "true",
    "false",
    "and",
    "or",
    "not",
    "in",
    "op",
    "(",
    ")",
    "[",
    "]",
    ",",
    "end",
]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _TokenKind
    text: str
    position: int
    value: object = None

    def describe(self) -> str:
        """E.g. "field 'x'", "number 3", "'and'", for error messages."""
        if self.kind == "end":
            return "end of expression"
        if self.kind == "name":
            return f"field {self.text!r}"
        if self.kind == "number":
            return f"number {self.text}"
        if self.kind == "string":
            return f"string {_format(self.value, 30)}"
        return f"'{self.text}'"


_KEYWORDS: Final[dict[str, _TokenKind]] = {
    "and": "and",
    "or": "or",
    "not": "not",
    "in": "in",
    "true": "true",
    "false": "false",
}
_NUMBER_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_NAME_START: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS: Final = _NAME_START | frozenset("0123456789")
_DIGITS: Final = frozenset("0123456789")
_ESCAPES: Final = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_KNOWN_ESCAPES: Final = " ".join("\\" + char for char in _ESCAPES)
_PUNCTUATION: Final[dict[str, _TokenKind]] = {"(": "(", ")": ")", "[": "[", "]": "]", ",": ","}
_OPERATOR_HINTS: Final = {
    "=": "==",
    "=>": ">=",
    "=<": "<=",
    "<>": "!=",
    "!": "!=' or 'not",
    "&&": "and",
    "&": "and",
    "||": "or",
    "|": "or",
}
_CHARACTER_HINTS: Final = {
    "+": "arithmetic is not supported",
    "*": "arithmetic is not supported",
    "/": "arithmetic is not supported",
    "%": "arithmetic is not supported",
    "\u2018": "use straight quotes ' or \"",
    "\u2019": "use straight quotes ' or \"",
    "\u201c": "use straight quotes ' or \"",
    "\u201d": "use straight quotes ' or \"",
}


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(source)
    while i < n:
        char = source[i]
        if char.isspace():
            i += 1
        elif char in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[char], char, i))
            i += 1
        elif char in "'\"":
            i = _scan_string(source, i, tokens)
        elif char in _DIGITS or char == "-" or (char == "." and source[i + 1 : i + 2] in _DIGITS):
            i = _scan_number(source, i, tokens)
        elif char in _NAME_START:
            i = _scan_name(source, i, tokens)
        elif char in "=!<>&|":
            i = _scan_operator(source, i, tokens)
        else:
            hint = _CHARACTER_HINTS.get(char)
            suffix = f" ({hint})" if hint else ""
            shown = f"'{char}'" if char.isprintable() else repr(char)
            raise ExpressionError(f"unexpected character {shown}{suffix}", position=i)
    tokens.append(_Token("end", "", n))
    return tokens


def _scan_string(source: str, start: int, tokens: list[_Token]) -> int:
    quote = source[start]
    parts: list[str] = []
    i = start + 1
    n = len(source)
    while True:
        if i >= n:
            raise ExpressionError(f"unterminated string (no closing {quote!r})", position=start)
        char = source[i]
        if char == quote:
            break
        if char == "\\":
            if i + 1 >= n:
                raise ExpressionError(f"unterminated string (no closing {quote!r})", position=start)
            escaped = source[i + 1]
            if escaped not in _ESCAPES:
                sequence = source[i : i + 2]
                raise ExpressionError(
                    f"unknown escape '{sequence}' in string (known: {_KNOWN_ESCAPES})",
                    position=i,
                )
            parts.append(_ESCAPES[escaped])
            i += 2
        else:
            parts.append(char)
            i += 1
    tokens.append(_Token("string", source[start : i + 1], start, "".join(parts)))
    return i + 1


def _scan_number(source: str, start: int, tokens: list[_Token]) -> int:
    match = _NUMBER_RE.match(source, start)
    if match is None:  # a '-' that does not start a number
        raise ExpressionError(
            "expected a number after '-' (arithmetic is not supported)", position=start
        )
    end = match.end()
    if end < len(source) and (source[end] in _NAME_CHARS or source[end] == "."):
        stop = end
        while stop < len(source) and (source[stop] in _NAME_CHARS or source[stop] in ".+-"):
            stop += 1
        raise ExpressionError(f"malformed number {source[start:stop]!r}", position=start)
    text = match.group()
    value: int | float
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise ExpressionError(f"number {text} is out of range", position=start)
    else:
        value = int(text)
    tokens.append(_Token("number", text, start, value))
    return end


def _scan_name(source: str, start: int, tokens: list[_Token]) -> int:
    match = _NAME_RE.match(source, start)
    assert match is not None  # source[start] is a name start
    end = match.end()
    if end < len(source) and source[end] == ".":
        raise ExpressionError("expected a name after '.'", position=end + 1)
    text = match.group()
    keyword = _KEYWORDS.get(text)
    if keyword is not None:
        value: object = {"true": True, "false": False}.get(text)
        tokens.append(_Token(keyword, text, start, value))
        return end
    lowered = text.lower()
    if lowered in _KEYWORDS:
        raise ExpressionError(
            f"unknown name {text!r} (keywords are lower-case: did you mean {lowered!r}?)",
            position=start,
        )
    if lowered in ("none", "null"):
        raise ExpressionError(
            f"{text!r} is not supported (a missing field already makes comparisons false)",
            position=start,
        )
    tokens.append(_Token("name", text, start))
    return end


def _scan_operator(source: str, start: int, tokens: list[_Token]) -> int:
    pair = source[start : start + 2]
    if pair in ("==", "!=", "<=", ">="):
        tokens.append(_Token("op", pair, start))
        return start + 2
    if pair in _OPERATOR_HINTS:
        raise ExpressionError(
            f"unknown operator {pair!r} (did you mean '{_OPERATOR_HINTS[pair]}'?)",
            position=start,
        )
    char = source[start]
    if char in "<>":
        tokens.append(_Token("op", char, start))
        return start + 1
    raise ExpressionError(
        f"unknown operator {char!r} (did you mean '{_OPERATOR_HINTS[char]}'?)", position=start
    )


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_FOLLOW_HINTS: Final = {
    "is": "'is' is not supported; use '=='",
    "contains": "use \"'value' in field\" to test list membership",
}


class _Parser:
    """Recursive-descent parser over the token list; collects referenced field names."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self.fields: set[str] = set()

    def _peek(self, offset: int = 0) -> _Token:
        return self._tokens[min(self._index + offset, len(self._tokens) - 1)]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def parse(self) -> _Node:
        if self._peek().kind == "end":
            raise ExpressionError("empty expression", position=0)
        node = self._disjunction(0)
        token = self._peek()
        if token.kind != "end":
            raise self._unexpected_follow(token, "end of expression")
        return node

    def _unexpected_follow(self, token: _Token, closer: str) -> ExpressionError:
        if token.kind == ")":
            return ExpressionError("unexpected ')' without a matching '('", position=token.position)
        message = f"expected 'and', 'or' or {closer}, got {token.describe()}"
        hint = _FOLLOW_HINTS.get(token.text) if token.kind == "name" else None
        if hint is not None:
            message += f" ({hint})"
        return ExpressionError(message, position=token.position)

    def _check_depth(self, depth: int, token: _Token) -> None:
        if depth >= MAX_DEPTH:
            raise ExpressionError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels of "
                "parentheses and 'not')",
                position=token.position,
            )

    def _disjunction(self, depth: int) -> _Node:
        operands = [self._conjunction(depth)]
        while self._peek().kind == "or":
            self._advance()
            operands.append(self._conjunction(depth))
        return operands[0] if len(operands) == 1 else _Or(tuple(operands))

    def _conjunction(self, depth: int) -> _Node:
        operands = [self._negation(depth)]
        while self._peek().kind == "and":
            self._advance()
            operands.append(self._negation(depth))
        return operands[0] if len(operands) == 1 else _And(tuple(operands))

    def _negation(self, depth: int) -> _Node:
        token = self._peek()
        if token.kind == "not":
            self._check_depth(depth, token)
            self._advance()
            return _Not(self._negation(depth + 1))
        if token.kind == "(":
            self._check_depth(depth, token)
            self._advance()
            inner = self._disjunction(depth + 1)
            close = self._peek()
            if close.kind == "end":
                raise ExpressionError(
                    f"expected ')' to close the '(' at character {token.position}",
                    position=close.position,
                )
            if close.kind != ")":
                raise self._unexpected_follow(close, "')'")
            self._advance()
            if self._at_operator():
                after = self._peek()
                raise ExpressionError(
                    f"cannot apply {self._operator_text(after)!r} to a parenthesised "
                    "condition; put the comparison inside the parentheses",
                    position=after.position,
                )
            return inner
        return self._comparison()

    def _at_operator(self) -> bool:
        """Whether the next tokens are a comparison or membership operator."""
        token = self._peek()
        return token.kind in ("op", "in") or (token.kind == "not" and self._peek(1).kind == "in")

    def _operator_text(self, token: _Token) -> str:
        return "not in" if token.kind == "not" else token.text

    def _comparison(self) -> _Node:
        left = self._value(None)
        token = self._peek()
        node: _Node
        if token.kind == "op":
            self._advance()
            right = self._value(token)
            if token.text in _ORDERING:
                for side in (left, right):
                    if isinstance(side, _Literal) and side.kind in ("boolean", "list"):
                        raise ExpressionError(
                            f"{token.text!r} compares numbers or strings, not a {side.kind}",
                            position=side.position,
                        )
            node = _Compare(left, token.text, right)
        elif token.kind == "in" or (token.kind == "not" and self._peek(1).kind == "in"):
            negate = token.kind == "not"
            self._advance()
            if negate:
                self._advance()
            if isinstance(left, _ListLiteral):
                raise ExpressionError(
                    "the left side of 'in' must be a single value, not a list",
                    position=left.position,
                )
            right = self._value(token)
            if isinstance(right, _Literal) and not isinstance(right, _ListLiteral):
                raise ExpressionError(
                    f"the right side of 'in' must be a list or a field, got {right.describe()}",
                    position=right.position,
                )
            node = _Membership(left, right, negate)
        elif token.kind == "not":
            raise ExpressionError("expected 'in' after 'not'", position=self._peek(1).position)
        else:
            return self._bare(left)
        if self._at_operator():
            raise ExpressionError(
                "comparisons cannot be chained; join them with 'and'",
                position=self._peek().position,
            )
        return node

    def _bare(self, operand: _Operand) -> _Node:
        if isinstance(operand, _Field):
            return _Truthy(operand.name)
        assert isinstance(operand, _Literal)
        if operand.kind == "boolean":
            return _Constant(bool(operand.value))
        raise ExpressionError(
            f"{operand.describe()} is not a condition on its own; compare it with a field",
            position=operand.position,
        )

    def _value(self, after: _Token | None) -> _Operand:
        token = self._peek()
        if token.kind == "name":
            self._advance()
            following = self._peek()
            if following.kind == "(":
                raise ExpressionError(
                    f"unexpected '(' after {token.text!r}: function calls are not supported",
                    position=following.position,
                )
            self.fields.add(token.text)
            return _Field(token.text, token.position)
        if token.kind in ("number", "string", "true", "false"):
            self._advance()
            return _Literal(token.value, _literal_kind(token), token.position)
        if token.kind == "[":
            return self._list()
        if after is None:
            message = f"expected a condition, got {token.describe()}"
        else:
            operator_text = "not in" if after.kind == "not" else after.text
            message = f"expected a value after {operator_text!r}, got {token.describe()}"
        raise ExpressionError(message, position=token.position)

    def _list(self) -> _ListLiteral:
        opening = self._advance()
        items: list[object] = []
        if self._peek().kind == "]":
            self._advance()
            return _ListLiteral((), opening.position)
        while True:
            token = self._peek()
            if token.kind in ("number", "string", "true", "false"):
                if len(items) >= MAX_LIST_ITEMS:
                    raise ExpressionError(
                        f"list has too many items (limit is {MAX_LIST_ITEMS})",
                        position=token.position,
                    )
                items.append(token.value)
                self._advance()
            elif token.kind == "name":
                raise ExpressionError(
                    f"list items must be literals, got field {token.text!r} (quote text: "
                    f"{_quote(token.text)})",
                    position=token.position,
                )
            elif token.kind == "[":
                raise ExpressionError("lists cannot be nested", position=token.position)
            else:
                raise ExpressionError(
                    f"expected a list item (number, string, true or false), got {token.describe()}",
                    position=token.position,
                )
            separator = self._peek()
            if separator.kind == "]":
                self._advance()
                return _ListLiteral(tuple(items), opening.position)
            if separator.kind != ",":
                raise ExpressionError(
                    f"expected ']' or ',' in the list opened at character {opening.position}, "
                    f"got {separator.describe()}",
                    position=separator.position,
                )
            self._advance()


def _literal_kind(token: _Token) -> _Kind:
    if token.kind == "number":
        return "number"
    if token.kind == "string":
        return "string"
    return "boolean"


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expression:
    """An immutable, compiled rule. Build it with `parse_expression` (or `Expression(source)`).

    Equality and hashing use the source text. Evaluation never raises and never re-parses.

    Attributes:
        source: The rule text exactly as written.
    """

    source: str
    _root: _Node = field(init=False, repr=False, compare=False)
    _fields: frozenset[str] = field(init=False, repr=False, compare=False)
    _predicate: _Predicate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        root, names = _compile(self.source)
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_fields", names)
        object.__setattr__(self, "_predicate", root.compile())

    def __reduce__(self) -> tuple[type[Expression], tuple[str]]:
        return (Expression, (self.source,))

    def __str__(self) -> str:
        return self.source

    def evaluate(self, context: Mapping[str, object]) -> bool:
        """Whether the rule holds for `context`.

        Args:
            context: Flat mapping of dotted field names to values (numbers, strings,
                booleans, lists of strings). Absent fields are allowed.

        Returns:
            The rule's truth value; missing fields and type mismatches make the comparison
            they occur in false (see the module docstring).
        """
        return self._predicate(context)

    def fields(self) -> frozenset[str]:
        """Every context field name the rule references."""
        return self._fields

    def explain(self, context: Mapping[str, object]) -> str:
        """A short human-readable account of how each condition came out, for a rule tester.

        Every leaf condition is reported in source order (without short-circuiting) as
        ``condition: values -> true|false``, joined by ``"; "``; long values are shortened.
        When the rule has more than one condition or a ``not``, the overall
        ``result -> true|false`` is appended, so the text always ends with the rule's value.

        Args:
            context: The context to evaluate against.

        Returns:
            E.g. ``"cash_flow.balance >= 1000: 5400.0 >= 1000 -> true; profile.income_band
            in ['high']: 'low' -> false; result -> false"``.
        """
        lines: list[str] = []
        self._root.explain(context, lines)
        if not isinstance(self._root, _Leaf):
            lines.append(f"result -> {_verdict(self._root.evaluate(context))}")
        return "; ".join(lines)


def _compile(source: str) -> tuple[_Node, frozenset[str]]:
    if len(source) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is too long ({len(source)} characters; the limit is {MAX_LENGTH})",
            position=MAX_LENGTH,
        )
    parser = _Parser(_tokenize(source))
    root = parser.parse()
    return root, frozenset(parser.fields)


def parse_expression(source: str) -> Expression:
    """Compile a rule.

    Args:
        source: Rule text in the grammar of the module docstring.

    Returns:
        The compiled, reusable `Expression`.

    Raises:
        ExpressionError: If the text does not parse or a limit is exceeded; `position` is
            the 0-based character offset of the problem.
    """
    return Expression(source)


# --------------------------------------------------------------------------------------------
# Rule tester support
# --------------------------------------------------------------------------------------------


def _render_node(node: _Node, nested: bool = False) -> str:
    """A node in canonical expression syntax (parenthesised when `nested` and compound)."""
    if isinstance(node, _Constant):
        return _verdict(node.value)
    if isinstance(node, _Truthy):
        return node.name
    if isinstance(node, _Compare | _Membership):
        return node.render()
    if isinstance(node, _Not):
        inner = _render_node(node.operand, nested=True)
        return (
            f"not ({inner})" if isinstance(node.operand, _Compare | _Membership) else f"not {inner}"
        )
    if isinstance(node, _And | _Or):
        word = " and " if isinstance(node, _And) else " or "
        text = word.join(_render_node(operand, nested=True) for operand in node.operands)
        return f"({text})" if nested else text
    return "?"


@dataclass(frozen=True, slots=True)
class Clause:
    """One top-level clause of a rule and its truth value in a context.

    Attributes:
        text: The clause in canonical expression syntax.
        value: Whether it holds.
    """

    text: str
    value: bool


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    """Why a rule came out as it did for one context (for the rule tester).

    Attributes:
        source: The rule text.
        result: The rule's truth value (the same as `Expression.evaluate`).
        connective: `"and"` or `"or"` when the rule is a top-level conjunction or
            disjunction, else None (then `clauses` holds the whole rule).
        clauses: Each top-level clause with its truth value, in source order.
        fields: Each field the rule reads, sorted, with its value in expression syntax
            (`missing` when the context lacks it).
        detail: `Expression.explain`'s condition-by-condition account.
    """

    source: str
    result: bool
    connective: Literal["and", "or"] | None
    clauses: tuple[Clause, ...]
    fields: tuple[tuple[str, str], ...]
    detail: str


def explain_rule(expression: Expression, context: Mapping[str, object]) -> RuleExplanation:
    """Evaluate `expression` in `context` and report the fields it reads and its clauses.

    Args:
        expression: A compiled rule.
        context: Flat mapping of dotted field names to values.

    Returns:
        The explanation; its `result` equals `expression.evaluate(context)`.
    """
    root = expression._root
    connective: Literal["and", "or"] | None = None
    parts: tuple[_Node, ...] = (root,)
    if isinstance(root, _And):
        connective, parts = "and", root.operands
    elif isinstance(root, _Or):
        connective, parts = "or", root.operands
    clauses = tuple(
        Clause(text=_render_node(part, nested=connective is not None), value=part.evaluate(context))
        for part in parts
    )
    fields = tuple(
        (name, _format(context.get(name, _MISSING))) for name in sorted(expression.fields())
    )
    return RuleExplanation(
        source=expression.source,
        result=expression.evaluate(context),
        connective=connective,
        clauses=clauses,
        fields=fields,
        detail=expression.explain(context),
    )
