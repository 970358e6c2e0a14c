"""A safe arithmetic evaluator: a regex tokenizer and a recursive-descent parser, no ``eval``.

Grammar, with Python's precedence: ``**`` is right-associative and binds tighter
than a unary sign on its left (``-2**2 == -4``, ``2**-1 == 0.5``)::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/" | "//" | "%") unary)*
    unary := ("+" | "-") unary | power
    power := atom ("**" unary)?
    atom  := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Integers stay exact; ``/`` of two ints that divide evenly gives an int
(``6/3 == 2``), otherwise a float; ``1e3`` is a float, as in Python. ``^`` means
``**`` (nobody wants XOR from a calculator). The input is NFKC-normalised, so
full-width digits and brackets work; the multiplication, division and minus
signs (U+00D7, U+00F7, U+2212) are operators; superscripts are powers (``3² == 9``).
Every failure is a :class:`CalcError` with a stable ``code``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

MAX_LENGTH = 1000  # characters of input
MAX_DEPTH = 50  # nested brackets, unary signs and powers
# Python refuses to turn ints of more than 4300 digits into text, and so into
# JSON (sys.int_info.default_max_str_digits): stay under it with a margin.
MAX_INT_DIGITS = 4000
_INT_LIMIT = 10**MAX_INT_DIGITS

Number = int | float
Token = tuple[str, Any, int]  # (kind: num/name/op/end, value, index in normalised text)
Where = Callable[[int], int]  # normalised index -> 1-based position in the caller's text


class CalcError(ValueError):
    """An expression that cannot be evaluated.

    ``code`` is a stable snake_case word: ``syntax_error``, ``division_by_zero``,
    ``too_long``, ``too_deep``, ``too_large``, ``unknown_function``,
    ``unknown_name`` or ``domain_error``. ``position`` is the 1-based character
    of the caller's original string where the problem is, or None.
    """

    def __init__(self, code: str, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} at position {position}")
        self.code = code
        self.position = position


_OPERATORS = {  # after NFKC, which leaves these alone
    "\u00d7": "*", "\u22c5": "*", "\u2217": "*",  # multiplication sign, dot operator, asterisk op
    "\u00f7": "/", "\u2215": "/",  # division sign, division slash
    "\u2212": "-",  # minus sign
    "^": "**",
}


def _fold(text: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        digit = unicodedata.decimal(ch, None)  # Arabic-Indic, Devanagari, ... digits
        out.append(str(digit) if digit is not None else _OPERATORS.get(ch, ch))
    return "".join(out)


def _normalise(text: str) -> tuple[str, list[int]]:
    """Return the folded text and, for each of its characters, its index in ``text``."""
    pieces: list[str] = []
    where: list[int] = []
    i = 0
    while i < len(text):
        kind = unicodedata.decomposition(text[i]).split(" ", 1)[0]
        j = i + 1
        if kind == "<super>":  # "3²³" means 3**23, not 323
            while j < len(text) and unicodedata.decomposition(text[j]).startswith("<super>"):
                j += 1
            piece = f"**({_fold(text[i:j])})"
        elif kind in ("<sub>", "<fraction>"):
            piece = text[i]  # NFKC would silently turn "2₃" into 23 and "1½" into 11, slash, 2
        else:
            piece = _fold(text[i])
        pieces.append(piece)
        where.extend([i] * len(piece))
        i = j
    return "".join(pieces), where


# One token after optional whitespace. [0-9], not \d: \d also matches other scripts' digits.
_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|//|[-+*/%(),]))"
)


def _tokenize(s: str, at: Where) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while match := _TOKEN.match(s, i):
        kind = str(match.lastgroup)
        text, start, i = match[kind], match.start(kind), match.end()
        if kind == "num":
            value: Number = int(text) if text.isdigit() else float(text)
            tokens.append((kind, _check(value, start, at), start))
        else:
            tokens.append((kind, text.lower(), start))
    rest = s[i:].lstrip()
    if rest:
        raise CalcError("syntax_error", f"unexpected character {rest[0]!r}", at(len(s) - len(rest)))
    tokens.append(("end", None, len(s)))
    return tokens


def _check(value: Number, index: int, at: Where) -> Number:
    """Refuse infinities, NaN and integers too long to print."""
    if isinstance(value, float):
        if math.isnan(value):
            raise CalcError("domain_error", "the result is not a number", at(index))
        if math.isinf(value):
            raise CalcError("too_large", "the result is too large (over 1.8e308)", at(index))
    elif abs(value) >= _INT_LIMIT:
        raise CalcError("too_large", f"the result has more than {MAX_INT_DIGITS} digits", at(index))
    return value


def _power(a: Number, b: Number) -> Number:
    if a == 0 and b < 0:
        raise ZeroDivisionError
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        # Estimate the size first: 9**9**9 must be refused, not computed.
        if abs(a) > 1 and (b > 4 * MAX_INT_DIGITS or b * math.log10(abs(a)) > MAX_INT_DIGITS + 1):
            raise OverflowError
        return a**b
    return math.pow(a, b)  # raises ValueError where the ** operator returns a complex


def _divide(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
        return a // b
    return a / b


_BINARY: dict[str, Callable[[Any, Any], Number]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "**": _power,
}


def _sqrt(x: Number) -> Number:
    if isinstance(x, int) and x >= 0 and math.isqrt(x) ** 2 == x:
        return math.isqrt(x)
    return math.sqrt(x)


def _round(x: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int):
        raise ValueError("round() takes a whole number of digits")
    return round(x) if digits == 0 else round(x, digits)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


# name -> (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (_sqrt, 1, 1), "abs": (abs, 1, 1), "round": (_round, 1, 2),
    "min": (lambda *a: min(a), 1, 100), "max": (lambda *a: max(a), 1, 100),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1),
    "log": (_log, 1, 2), "log10": (math.log10, 1, 1), "log2": (math.log2, 1, 1),
    "exp": (math.exp, 1, 1), "sin": (math.sin, 1, 1), "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class _Parser:
    """Recursive descent over the tokens, building tuples that :func:`_run` evaluates.

    Parsing everything first reports a syntax error before any arithmetic one.
    Runs of one precedence level become one ("chain", first, [(op, index, node)])
    node, evaluated in a loop, so only brackets, signs and powers nest (and count
    towards MAX_DEPTH).
    """

    def __init__(self, tokens: list[Token], at: Where) -> None:
        self.tokens, self.at, self.i = tokens, at, 0
        self.depth = -1  # unary() nesting; the outermost call is not nested

    def take(self, *ops: str) -> Token | None:
        token = self.tokens[self.i]
        if token[0] == "op" and token[1] in ops:
            self.i += 1
            return token
        return None

    def fail(self, what: str = "unexpected") -> CalcError:
        kind, value, index = self.tokens[self.i]
        found = {"end": "end of the expression", "num": f"number {value}"}.get(kind, repr(value))
        return CalcError("syntax_error", f"{what} {found}", self.at(index))

    def expect(self, op: str) -> None:
        if not self.take(op):
            raise self.fail(f"expected {op!r}, found")

    def chain(self, ops: tuple[str, ...], operand: Callable[[], tuple]) -> tuple:
        first, rest = operand(), []
        while token := self.take(*ops):
            rest.append((token[1], token[2], operand()))
        return ("chain", first, rest) if rest else first

    def expr(self) -> tuple:
        return self.chain(("+", "-"), self.term)

    def term(self) -> tuple:
        return self.chain(("*", "/", "//", "%"), self.unary)

    def unary(self) -> tuple:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            where = self.at(self.tokens[self.i][2])
            raise CalcError("too_deep", f"nested more than {MAX_DEPTH} levels deep", where)
        if sign := self.take("+", "-"):
            operand = self.unary()
            node = ("neg", operand) if sign[1] == "-" else operand
        else:
            node = self.atom()
            if power := self.take("**"):
                node = ("chain", node, [("**", power[2], self.unary())])
        self.depth -= 1
        return node

    def atom(self) -> tuple:
        kind, value, index = self.tokens[self.i]
        if kind == "num":
            self.i += 1
            return ("num", value)
        if self.take("("):
            node = self.expr()
            self.expect(")")
            return node
        if kind != "name":
            raise self.fail()
        self.i += 1
        if not self.take("("):
            if value not in _CONSTANTS:
                message = f"unknown name {value!r} (known: {', '.join(_CONSTANTS)})"
                raise CalcError("unknown_name", message, self.at(index))
            return ("num", _CONSTANTS[value])
        if value not in _FUNCTIONS:
            message = f"unknown function {value!r} (known: {', '.join(_FUNCTIONS)})"
            raise CalcError("unknown_function", message, self.at(index))
        args = [self.expr()]
        while self.take(","):
            args.append(self.expr())
        self.expect(")")
        fewest, most = _FUNCTIONS[value][1:]
        if not fewest <= len(args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            message = f"{value}() takes {wanted} argument(s), got {len(args)}"
            raise CalcError("syntax_error", message, self.at(index))
        return ("call", value, args, index)


def _apply(fn: Callable[..., Number], args: list[Number], what: str, index: int, at: Where) -> Any:
    """Call ``fn`` and turn Python's arithmetic exceptions into CalcErrors."""
    try:
        result = fn(*args)
    except ZeroDivisionError:
        code, reason = "division_by_zero", f"division by zero in {what}"
    except OverflowError:
        code, reason = "too_large", f"the result of {what} is too large"
    except ValueError:
        code, reason = "domain_error", f"{what} is undefined for {', '.join(map(repr, args))}"
    else:
        return _check(result, index, at)
    raise CalcError(code, reason, at(index))


def _run(node: tuple, at: Where) -> Number:
    if node[0] == "num":
        return node[1]
    if node[0] == "neg":
        return -_run(node[1], at)
    if node[0] == "chain":
        value = _run(node[1], at)
        for op, index, operand in node[2]:
            value = _apply(_BINARY[op], [value, _run(operand, at)], repr(op), index, at)
        return value
    _, name, args, index = node
    return _apply(_FUNCTIONS[name][0], [_run(a, at) for a in args], f"{name}()", index, at)


def evaluate(expr: str) -> int | float:
    """Evaluate one arithmetic expression; raise :class:`CalcError` if it cannot be."""
    if not isinstance(expr, str):
        raise TypeError(f"expression must be a string, got {type(expr).__name__}")
    if len(expr) > MAX_LENGTH:
        message = f"the expression is {len(expr)} characters long; the limit is {MAX_LENGTH}"
        raise CalcError("too_long", message)
    text, where = _normalise(expr)
    if len(text) > 2 * MAX_LENGTH:
        raise CalcError("too_long", f"the expression is {len(text)} characters once normalised")

    def at(index: int) -> int:
        return where[index] + 1 if index < len(where) else len(expr) + 1

    tokens = _tokenize(text, at)
    if len(tokens) == 1:
        raise CalcError("syntax_error", "the expression is empty")
    parser = _Parser(tokens, at)
    tree = parser.expr()
    if tokens[parser.i][0] != "end":
        raise parser.fail()
    return _run(tree, at)
