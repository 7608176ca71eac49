"""A small Go text/template engine with the Sprig/Helm functions the labelwise chart uses (CI has no helm).

It renders the chart's real templates (helm/labelwise/templates), so that tests/deploy can check EVERY object
the chart produces, not a Python copy of it. It covers the subset of text/template the chart is written in:
actions with trim markers and comments; if / else if / else, with, range (lists and maps, with `$k, $v :=`),
define and include; variables (`:=`, `=`, `$`); pipelines and parenthesised calls; field chains on `.` and on
variables. Missing map keys read as nil and a field of nil is an error, as in helm. Numbers keep Python's
int/float; printing follows Go (`2.0` prints `2`). Anything outside that subset raises TemplateError, so a
template using a construct this file does not know fails loudly instead of rendering wrong.

When a helm binary is on PATH, test_chart_objects.py compares this renderer's output with `helm template`.
"""

from __future__ import annotations

import ast
import base64
import copy
import functools
import hashlib
import hmac
import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """A template that does not parse or does not execute (also `fail` and `required`)."""


# ---------------------------------------------------------------------------------------------- lexing

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>:=|[()|,=])
    )""",
    re.VERBOSE,
)


@dataclass
class Tok:
    kind: str  # str, num, var, field, ident, op
    value: Any


def _tokenize(source: str) -> list[Tok]:
    tokens: list[Tok] = []
    pos = 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            raise TemplateError(f"cannot tokenize {source[pos:]!r} in {{{{ {source} }}}}")
        pos = match.end()
        kind = match.lastgroup
        text = match.group(kind)
        if kind == "str":
            tokens.append(Tok("str", ast.literal_eval(text)))
        elif kind == "raw":
            tokens.append(Tok("str", text[1:-1]))
        elif kind == "num":
            tokens.append(Tok("num", float(text) if re.search(r"[.eE]", text) else int(text)))
        elif kind == "var":
            name, *chain = text.split(".")
            tokens.append(Tok("var", (name, chain)))
        elif kind == "field":
            tokens.append(Tok("field", [p for p in text.split(".") if p]))
        else:
            tokens.append(Tok(kind, text))
    return tokens


def _split_actions(text: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", inner)] with trim markers applied and comments dropped."""
    items: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(" \t\r\n")
        if start < 0:
            items.append(("text", chunk))
            return items
        inner_start = start + 2
        if text.startswith("- ", inner_start) or text[inner_start : inner_start + 2] in ("-\n", "-\t"):
            chunk = chunk.rstrip(" \t\r\n")
            inner_start += 1
        items.append(("text", chunk))
        end = _find_action_end(text, inner_start)
        inner = text[inner_start:end]
        trim_next = False
        if re.search(r"\s-$", inner):
            inner = inner[:-1]
            trim_next = True
        stripped = inner.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError(f"unclosed comment near {text[start : start + 40]!r}")
        else:
            items.append(("action", stripped))
        pos = end + 2


def _find_action_end(text: str, pos: int) -> int:
    quote = None
    while pos < len(text):
        char = text[pos]
        if quote:
            if char == "\\" and quote == '"':
                pos += 2
                continue
            if char == quote:
                quote = None
        elif char in '"`':
            quote = char
        elif text.startswith("}}", pos):
            return pos
        elif text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if close < 0:
                raise TemplateError("unclosed comment")
            pos = close + 2
            continue
        pos += 1
    raise TemplateError("unclosed action")


# ---------------------------------------------------------------------------------------------- parsing


@dataclass
class Pipe:
    decl: list[str]
    assign: bool  # `=` rather than `:=`
    cmds: list[list[Any]]  # each command: operands (Tok or Pipe)


@dataclass
class Node:
    kind: str  # text, action, if, with, range, template
    value: Any = None  # text, Pipe, or (name, Pipe) for template
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)
    chained: bool = False  # an `else if` / `else with`, closed by its parent's `end`


def _parse_pipe(tokens: list[Tok], pos: int = 0, closing: str | None = None) -> tuple[Pipe, int]:
    decl: list[str] = []
    assign = False
    # a declaration: $a := ... or $a, $b := ... or $a = ...
    look = pos
    names = []
    while look < len(tokens) and tokens[look].kind == "var" and not tokens[look].value[1]:
        names.append(tokens[look].value[0])
        look += 1
        if look < len(tokens) and tokens[look].kind == "op" and tokens[look].value == ",":
            look += 1
            continue
        break
    if names and look < len(tokens) and tokens[look].kind == "op" and tokens[look].value in (":=", "="):
        decl, assign, pos = names, tokens[look].value == "=", look + 1
    cmds: list[list[Any]] = [[]]
    while pos < len(tokens):
        tok = tokens[pos]
        if tok.kind == "op" and tok.value == ")":
            if closing != ")":
                raise TemplateError("unexpected )")
            return Pipe(decl, assign, cmds), pos + 1
        if tok.kind == "op" and tok.value == "(":
            sub, pos = _parse_pipe(tokens, pos + 1, ")")
            cmds[-1].append(sub)
            continue
        if tok.kind == "op" and tok.value == "|":
            cmds.append([])
        elif tok.kind == "op":
            raise TemplateError(f"unexpected {tok.value!r}")
        else:
            cmds[-1].append(tok)
        pos += 1
    if closing:
        raise TemplateError("missing )")
    if any(not cmd for cmd in cmds):
        raise TemplateError("empty command in pipeline")
    return Pipe(decl, assign, cmds), pos


def parse(text: str, defines: dict[str, list[Node]]) -> list[Node]:
    """The node tree of one template file; its `define` blocks go into `defines`."""
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node], str | None]] = [(None, root, None)]  # (node, target, define)
    for kind, content in _split_actions(text):
        target = stack[-1][1]
        if kind == "text":
            if content:
                target.append(Node("text", content))
            continue
        tokens = _tokenize(content)
        head = tokens[0].value if tokens and tokens[0].kind == "ident" else None
        if head in ("if", "with", "range"):
            node = Node(head, _parse_pipe(tokens, 1)[0])
            target.append(node)
            stack.append((node, node.body, None))
        elif head == "else":
            node = stack[-1][0]
            if node is None:
                raise TemplateError("else outside if/with/range")
            if len(tokens) > 1:  # else if / else with
                nested = Node(tokens[1].value, _parse_pipe(tokens, 2)[0], chained=True)
                node.orelse.append(nested)
                stack.append((nested, nested.body, None))
            else:
                stack[-1] = (node, node.orelse, None)
        elif head == "end":
            while True:
                node, _, define = stack.pop()
                if define is not None:
                    defines[define] = _
                    break
                if node is None:
                    raise TemplateError("unexpected end")
                if not node.chained:
                    break
        elif head == "define":
            name = tokens[1].value
            body: list[Node] = []
            stack.append((None, body, name))
        elif head in ("template", "block"):
            if head == "block":
                raise TemplateError("block is not supported")
            pipe = _parse_pipe(tokens, 2)[0] if len(tokens) > 2 else None
            target.append(Node("template", (tokens[1].value, pipe)))
        else:
            target.append(Node("action", _parse_pipe(tokens)[0]))
    if len(stack) != 1:
        raise TemplateError("missing end")
    return root


# ---------------------------------------------------------------------------------------------- values


def go_str(value: Any) -> str:
    """How {{ value }} prints."""
    if value is None:
        return ""  # helm turns "<no value>" into ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def empty(value: Any) -> bool:
    if value is None or value is False:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, str | list | dict | tuple):
        return len(value) == 0
    return False


def helm_numbers(value: Any) -> Any:
    """helm's toYaml goes through encoding/json: a whole float64 prints as an int (1.0 -> 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: helm_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [helm_numbers(v) for v in value]
    return value


def to_yaml(value: Any) -> str:
    text = yaml.safe_dump(helm_numbers(value), sort_keys=True, default_flow_style=False, width=10**9)
    if text.endswith("\n...\n"):  # a bare scalar
        text = text[: -len("...\n")]
    return text.rstrip("\n")


def _indent(width: int, text: str) -> str:
    pad = " " * int(width)
    return pad + text.replace("\n", "\n" + pad)


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(0)
        if verb == "%%":
            return "%"
        value = next(values)
        if verb == "%q":
            return json.dumps(go_str(value))
        if verb == "%d":
            return str(int(value))
        return go_str(value)

    return re.sub(r"%[-+# 0-9.]*[svdqt%]", one, fmt)


def _dict(*pairs: Any) -> dict[str, Any]:
    return {str(pairs[i]): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}


def _set(target: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    target[key] = value
    return target


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        value = value[key] if isinstance(value, list) else (value or {}).get(key)
    return value


def _fail(message: str) -> None:
    raise TemplateError(message)


def _required(message: str, value: Any) -> Any:
    if value is None or value == "":
        raise TemplateError(message)
    return value


# sprig's derivePassword: the Master Password algorithm (masterpassword.app): scrypt(password, salt of the
# user), then HMAC-SHA256 of the site and counter picks a template and each of its characters. Cached: a
# render takes ~0.1 s per call and the tests render the same keys many times.
_MP_SCOPE = b"com.lyndir.masterpassword"
_MP_TEMPLATES = {
    "maximum": ("anoxxxxxxxxxxxxxxxxx", "axxxxxxxxxxxxxxxxxno"),
    # "long": the algorithm's 21 arrangements of four Cvc(v|c) words and one "no" pair
    "long": tuple(
        "".join(parts)
        for parts in [
            ("Cvcv", "no", "Cvcv", "Cvcv"),
            ("Cvcv", "Cvcv", "no", "Cvcv"),
            ("Cvcv", "Cvcv", "Cvcv", "no"),
            ("Cvcc", "no", "Cvcv", "Cvcv"),
            ("Cvcc", "Cvcv", "no", "Cvcv"),
            ("Cvcc", "Cvcv", "Cvcv", "no"),
            ("Cvcv", "no", "Cvcc", "Cvcv"),
            ("Cvcv", "Cvcc", "no", "Cvcv"),
            ("Cvcv", "Cvcc", "Cvcv", "no"),
            ("Cvcv", "no", "Cvcv", "Cvcc"),
            ("Cvcv", "Cvcv", "no", "Cvcc"),
            ("Cvcv", "Cvcv", "Cvcc", "no"),
            ("Cvcc", "no", "Cvcc", "Cvcv"),
            ("Cvcc", "Cvcc", "no", "Cvcv"),
            ("Cvcc", "Cvcc", "Cvcv", "no"),
            ("Cvcv", "no", "Cvcc", "Cvcc"),
            ("Cvcv", "Cvcc", "no", "Cvcc"),
            ("Cvcv", "Cvcc", "Cvcc", "no"),
            ("Cvcc", "no", "Cvcv", "Cvcc"),
            ("Cvcc", "Cvcv", "no", "Cvcc"),
            ("Cvcc", "Cvcv", "Cvcc", "no"),
        ]
    ),
    "medium": ("CvcnoCvc", "CvcCvcno"),
    "short": ("Cvcn",),
    "basic": ("aaanaaan", "aannaaan", "aaannaaa"),
    "pin": ("nnnn",),
}
_MP_CLASSES = {
    "V": "AEIOU",
    "C": "BCDFGHJKLMNPQRSTVWXYZ",
    "v": "aeiou",
    "c": "bcdfghjklmnpqrstvwxyz",
    "A": "AEIOUBCDFGHJKLMNPQRSTVWXYZ",
    "a": "AEIOUaeiouBCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz",
    "n": "0123456789",
    "o": "@&%?,=[]_:-+*$#!'^~;()/.",
    "x": "AEIOUaeiouBCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789!@#$%^&*()",
}


@functools.lru_cache(maxsize=64)
def _derive_password(counter: int, kind: str, password: str, user: str, site: str) -> str:
    templates = _MP_TEMPLATES.get(kind)
    if templates is None:  # an unknown kind renders a message, as in sprig
        return f"cannot find password template {kind}"
    user_b, site_b = user.encode(), site.encode()
    salt = _MP_SCOPE + len(user_b).to_bytes(4, "big") + user_b
    key = hashlib.scrypt(password.encode(), salt=salt, n=32768, r=8, p=2, maxmem=64 * 1024 * 1024, dklen=64)
    message = _MP_SCOPE + len(site_b).to_bytes(4, "big") + site_b + int(counter).to_bytes(4, "big")
    seed = hmac.new(key, message, hashlib.sha256).digest()
    template = templates[seed[0] % len(templates)]
    return "".join(_MP_CLASSES[c][seed[i + 1] % len(_MP_CLASSES[c])] for i, c in enumerate(template))


def _semver_compare(constraint: str, version: str) -> bool:
    """Sprig's semverCompare for one plain constraint such as ">=2.52.0" (enough for this chart)."""
    from packaging.version import Version

    # a "-0" suffix lets pre-release versions match (Sprig excludes them else): a cloud's v1.28.3-eks-1a2b
    match = re.fullmatch(r"\s*(>=|<=|>|<|=|!=)?\s*v?([0-9][0-9.]*)(?:-0)?\s*", constraint)
    if match is None:
        raise TemplateError(f"semverCompare: unsupported constraint {constraint!r}")
    op, wanted = match.group(1) or "=", Version(match.group(2))
    have = Version(str(version).lstrip("v").split("-")[0])
    return {
        ">=": have >= wanted,
        "<=": have <= wanted,
        ">": have > wanted,
        "<": have < wanted,
        "=": have == wanted,
        "!=": have != wanted,
    }[op]


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if type(a) is not type(b) and not (isinstance(a, int | float) and isinstance(b, int | float)):
            raise TemplateError(f"incompatible types for comparison: {a!r}, {b!r}")
        return op(a, b)

    return compare


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # text/template builtins (and, or and not are handled lazily in Engine)
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "len": len,
    "index": _index,
    "print": lambda *a: "".join(go_str(v) for v in a),
    "printf": _printf,
    # sprig
    "default": lambda d, v=None: d if empty(v) else v,
    "empty": empty,
    "coalesce": lambda *a: next((v for v in a if not empty(v)), None),
    "ternary": lambda a, b, cond: a if cond else b,
    "trunc": lambda n, s: s[: int(n)] if int(n) >= 0 else s[int(n) :],
    "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
    "trimPrefix": lambda prefix, s: s[len(prefix) :] if prefix and s.startswith(prefix) else s,
    "trim": lambda s: s.strip(),
    "contains": lambda sub, s: sub in s,
    "hasPrefix": lambda prefix, s: s.startswith(prefix),
    "hasSuffix": lambda suffix, s: s.endswith(suffix),
    "replace": lambda old, new, s: s.replace(old, new),
    # Go's regexp.MatchString: a match anywhere, unless the pattern anchors it (RE2 reads these as re does)
    "regexMatch": lambda regex, s: re.search(regex, go_str(s)) is not None,
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "join": lambda sep, items: sep.join(go_str(v) for v in items),
    "toString": go_str,
    "quote": lambda *a: " ".join(json.dumps(go_str(v), ensure_ascii=False) for v in a if v is not None),
    "squote": lambda *a: " ".join(f"'{go_str(v)}'" for v in a if v is not None),
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "int": lambda v: int(float(v or 0)),
    "int64": lambda v: int(float(v or 0)),
    "float64": lambda v: float(v or 0),
    # sprig's integer arithmetic: operands go through toInt64 (a float64 from values is truncated)
    "add": lambda *a: sum(int(float(v or 0)) for v in a),
    "sub": lambda a, b: int(float(a or 0)) - int(float(b or 0)),
    "max": lambda a, *b: max(int(float(v or 0)) for v in (a, *b)),
    "min": lambda a, *b: min(int(float(v or 0)) for v in (a, *b)),
    "list": lambda *a: list(a),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "dict": _dict,
    "set": _set,
    "unset": lambda d, k: (d.pop(k, None), d)[1],
    "hasKey": lambda d, k: k in d,
    "keys": lambda *ds: [k for d in ds for k in d],
    "get": lambda d, k: d.get(k, ""),
    "deepCopy": copy.deepcopy,
    "b64enc": lambda s: base64.b64encode(go_str(s).encode()).decode(),
    "b64dec": lambda s: base64.b64decode(s).decode(),
    "sha256sum": lambda s: hashlib.sha256(go_str(s).encode()).hexdigest(),
    "derivePassword": lambda counter, kind, password, user, site: _derive_password(
        int(counter), go_str(kind), go_str(password), go_str(user), go_str(site)
    ),
    "randAlphaNum": lambda n: "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(int(n))
    ),
    "semverCompare": _semver_compare,
    "fail": _fail,
    "required": _required,
    # helm
    "toYaml": to_yaml,
    "fromYaml": lambda s: yaml.safe_load(s) or {},
    "toJson": lambda v: json.dumps(helm_numbers(v), sort_keys=True, separators=(",", ":")),
    "lookup": lambda *_: {},  # what `helm template` (no cluster) gets
}


# ---------------------------------------------------------------------------------------------- executing


class Engine:
    """All templates of a chart: `define`s are shared; render() executes one file."""

    def __init__(self) -> None:
        self.defines: dict[str, list[Node]] = {}
        self.files: dict[str, list[Node]] = {}

    def add(self, name: str, text: str) -> None:
        self.files[name] = parse(text, self.defines)

    def render(self, name: str, dot: Any) -> str:
        return self._execute(self.files[name], dot, [{"$": dot}])

    def include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f'no template "{name}"')
        return self._execute(self.defines[name], dot, [{"$": dot}])

    def _execute(self, nodes: list[Node], dot: Any, scopes: list[dict[str, Any]]) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.value)
            elif node.kind == "action":
                value = self._pipe(node.value, dot, scopes)
                if not node.value.decl:
                    out.append(go_str(value))
            elif node.kind in ("if", "with"):
                scopes.append({})
                value = self._pipe(node.value, dot, scopes)
                if not empty(value):
                    out.append(self._execute(node.body, value if node.kind == "with" else dot, scopes))
                else:
                    out.append(self._execute(node.orelse, dot, scopes))
                scopes.pop()
            elif node.kind == "range":
                out.append(self._range(node, dot, scopes))
            elif node.kind == "template":
                name, pipe = node.value
                out.append(self.include(name, self._pipe(pipe, dot, scopes) if pipe else None))
        return "".join(out)

    def _range(self, node: Node, dot: Any, scopes: list[dict[str, Any]]) -> str:
        pipe = node.value
        collection = self._pipe(Pipe([], False, pipe.cmds), dot, scopes)
        if isinstance(collection, dict):
            items = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list):
            items = list(enumerate(collection))
        elif collection is None:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {collection!r}")
        if not items:
            return self._execute(node.orelse, dot, scopes)
        out = []
        for key, value in items:
            scope: dict[str, Any] = {}
            if len(pipe.decl) == 1:
                scope[pipe.decl[0]] = value
            elif len(pipe.decl) == 2:
                scope[pipe.decl[0]], scope[pipe.decl[1]] = key, value
            scopes.append(scope)
            out.append(self._execute(node.body, value, scopes))
            scopes.pop()
        return "".join(out)

    def _pipe(self, pipe: Pipe, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = _NOTHING
        for cmd in pipe.cmds:
            value = self._command(cmd, dot, scopes, value)
        if pipe.decl:
            if pipe.assign:
                for scope in reversed(scopes):
                    if pipe.decl[0] in scope:
                        scope[pipe.decl[0]] = value
                        break
                else:
                    raise TemplateError(f"undefined variable {pipe.decl[0]}")
            else:
                scopes[-1][pipe.decl[0]] = value
        return value

    def _command(self, cmd: list[Any], dot: Any, scopes: list[dict[str, Any]], piped: Any) -> Any:
        first, rest = cmd[0], cmd[1:]
        if isinstance(first, Tok) and first.kind == "ident" and first.value not in ("true", "false", "nil"):
            name = first.value
            if name in ("and", "or"):
                operands = [lambda a=a: self._arg(a, dot, scopes) for a in rest]
                if piped is not _NOTHING:
                    operands.append(lambda: piped)
                result = None
                for operand in operands:
                    result = operand()
                    if empty(result) == (name == "and"):
                        return result
                return result
            args = [self._arg(a, dot, scopes) for a in rest]
            if piped is not _NOTHING:
                args.append(piped)
            if name == "not":
                return empty(args[0])
            if name == "include":
                return self.include(*args)
            if name not in FUNCTIONS:
                raise TemplateError(f'function "{name}" not defined')
            return FUNCTIONS[name](*args)
        value = self._arg(first, dot, scopes)
        args = [self._arg(a, dot, scopes) for a in rest]
        if piped is not _NOTHING:
            args.append(piped)
        if callable(value):
            return value(*args)
        if args:
            raise TemplateError(f"can't give arguments to non-function {first}")
        return value

    def _arg(self, operand: Any, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if isinstance(operand, Pipe):
            return self._pipe(operand, dot, scopes)
        kind, value = operand.kind, operand.value
        if kind in ("str", "num"):
            return value
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}[value]
        if kind == "field":
            return _fields(dot, value)
        if kind == "var":
            name, chain = value
            for scope in reversed(scopes):
                if name in scope:
                    return _fields(scope[name], chain)
            raise TemplateError(f"undefined variable {name}")
        raise TemplateError(f"bad operand {operand}")


_NOTHING = object()


def _fields(value: Any, chain: list[str]) -> Any:
    for name in chain:
        if value is None:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(value, dict):
            value = value.get(name)
        else:
            value = getattr(value, name)
    return value


# ---------------------------------------------------------------------------------------------- helm


class _Files:
    def __init__(self, chart: Path) -> None:
        self._chart = chart

    def Get(self, path: str) -> str:  # helm's name
        target = self._chart / path
        return target.read_text(encoding="utf-8") if target.is_file() else ""


class _APIVersions:
    def __init__(self, versions: set[str]) -> None:
        self._versions = versions

    def Has(self, version: str) -> bool:  # helm's name
        return version in self._versions


def render_chart(
    chart: Path,
    values: dict[str, Any],
    release: str = "labelwise",
    namespace: str = "default",
    kube_version: str = "1.30.0",
    api_versions: set[str] | None = None,
) -> dict[str, str]:
    """{template path: rendered text} for every template helm renders (not _*.tpl; NOTES.txt included)."""
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    major, minor, _ = kube_version.split(".")
    context = {
        "Values": copy.deepcopy(values),
        "Release": {
            "Name": release,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
        },
        "Chart": {key[:1].upper() + key[1:]: value for key, value in metadata.items()},
        "Files": _Files(chart),
        "Capabilities": {
            "KubeVersion": {"Version": f"v{kube_version}", "Major": major, "Minor": minor},
            "APIVersions": _APIVersions(api_versions or set()),
        },
    }
    engine = Engine()
    templates = sorted(p for p in (chart / "templates").rglob("*") if p.is_file())
    for path in templates:
        engine.add(str(path.relative_to(chart)), path.read_text(encoding="utf-8"))
    rendered = {}
    for path in templates:
        name = str(path.relative_to(chart))
        if path.name.startswith("_"):
            continue
        context["Template"] = {
            "Name": f"{metadata['name']}/{name}",
            "BasePath": f"{metadata['name']}/templates",
        }
        rendered[name] = engine.render(name, context)
    return rendered


def render_objects(chart: Path, values: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for these values, parsed."""
    objects = []
    for name, text in render_chart(chart, values, **kwargs).items():
        if name.endswith("NOTES.txt"):
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise TemplateError(f"{name} renders invalid YAML: {exc}\n{text}") from exc
        objects.extend(doc for doc in docs if doc)
    return objects
