"""The Corefile syntax (CoreDNS's Caddyfile dialect): tokens -> server blocks -> directives.

Pure: text in, frozen values out. What the directives mean is :mod:`podnet.dns.coreconfig`'s job.

Syntax accepted (as CoreDNS's lexer and parser):

* server blocks ``KEY [KEY...] {`` ... ``}``; keys separated by spaces or commas, e.g. ``.:53``,
  ``example.org:53``, ``dns://example.org``, ``a.org b.org:5353``;
* inside, one directive per line: ``NAME [ARGS...]``, optionally ending in ``{`` that opens a nested
  block of sub-directives closed by ``}`` (nesting to any depth);
* ``#`` starts a comment (outside quotes) up to the end of the line;
* ``"double quoted"`` tokens may hold spaces, ``\\"`` and newlines; backquoted tokens are taken literally;
* ``{$NAME}`` inside a token is replaced by the environment variable NAME ('' when unset);
* ``import PATTERN`` on its own line is replaced by the contents of the files matching the glob
  PATTERN (relative to the importing file's folder; a pattern with wildcards may match nothing, a
  plain path must exist), or by the body of a snippet ``(name) { ... }`` defined earlier at the top
  level; imports nest up to 10 deep.

Every error is a :class:`CorefileError` naming the file and the line, formatted as CoreDNS's
``FILE:LINE - Error during parsing: ...``.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, replace
from typing import Callable, Mapping

__all__ = ["Token", "Directive", "ServerBlock", "CorefileError", "tokenize", "parse"]

_ENV = re.compile(r"\{\$([A-Za-z_][A-Za-z0-9_]*)\}")


class CorefileError(ValueError):
    """A Corefile problem at one line; ``str()`` is the one-line message."""

    def __init__(self, path: str, line: int, message: str, plugin: str | None = None) -> None:
        self.path, self.line, self.message, self.plugin = path, line, message, plugin
        prefix = f"plugin/{plugin}: " if plugin else ""
        super().__init__(f"{prefix}{path}:{line} - Error during parsing: {message}")


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    line: int
    quoted: bool = False
    last_on_line: bool = False
    """True when no further token starts on this token's (last) line."""
    path: str = ""
    """The file the token comes from (imports)."""


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    args: tuple[str, ...]
    line: int
    block: tuple["Directive", ...] | None = None
    """Sub-directives when the directive opened a ``{ ... }`` block."""
    path: str = ""


@dataclass(frozen=True, slots=True)
class ServerBlock:
    keys: tuple[str, ...]
    line: int
    directives: tuple[Directive, ...]
    path: str = ""


def tokenize(text: str, path: str = "Corefile", env: Mapping[str, str] | None = None) -> list[Token]:
    """Split ``text`` into tokens with their line numbers; env placeholders replaced."""
    env = {} if env is None else env
    out: list[tuple[str, int, bool, int]] = []  # text, start line, quoted, end line
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r\f\v":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == '"':
            start, buf = line, []
            i += 1
            while True:
                if i >= n:
                    raise CorefileError(path, start, "unterminated quoted string")
                ch = text[i]
                if ch == "\\" and i + 1 < n and text[i + 1] in '"\\':
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                if ch == "\n":
                    line += 1
                buf.append(ch)
                i += 1
            out.append(("".join(buf), start, True, line))
        elif c == "`":
            start = line
            j = text.find("`", i + 1)
            if j < 0:
                raise CorefileError(path, start, "unterminated backquoted string")
            chunk = text[i + 1 : j]
            line += chunk.count("\n")
            out.append((chunk, start, True, line))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in " \t\r\f\v\n":
                j += 1
            out.append((text[i:j], line, False, line))
            i = j
    tokens = []
    for k, (t, start, quoted, end) in enumerate(out):
        last = k + 1 == len(out) or out[k + 1][1] != end
        tokens.append(Token(_ENV.sub(lambda m: env.get(m.group(1), ""), t), start, quoted, last, path))
    return tokens


MAX_IMPORT_DEPTH = 10


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def expand_imports(tokens: list[Token], env: Mapping[str, str], read: Callable[[str], str] = _read,
                   snippets: dict[str, list[Token]] | None = None, depth: int = 0) -> list[Token]:
    """``tokens`` with snippet definitions taken out and ``import`` lines replaced."""
    snippets = {} if snippets is None else snippets
    out: list[Token] = []
    i, nest = 0, 0
    while i < len(tokens):
        t = tokens[i]
        first = i == 0 or tokens[i - 1].last_on_line
        if not t.quoted and t.text == "{":
            nest += 1
        elif not t.quoted and t.text == "}":
            nest -= 1
        if first and not t.quoted and nest == 0 and t.text.startswith("(") and t.text.endswith(")") and len(t.text) > 2:
            if t.last_on_line or tokens[i + 1].text != "{" or not tokens[i + 1].last_on_line:
                raise CorefileError(t.path, t.line, f"snippet {t.text} needs '{{' at the end of its line")
            body, j, level = [], i + 2, 1
            while j < len(tokens):
                u = tokens[j]
                if not u.quoted and u.text == "{":
                    level += 1
                elif not u.quoted and u.text == "}":
                    level -= 1
                    if level == 0:
                        break
                body.append(u)
                j += 1
            else:
                raise CorefileError(t.path, t.line, f"snippet {t.text} has no closing '}}'")
            if body:
                body[-1] = replace(body[-1], last_on_line=True)
            snippets[t.text[1:-1]] = body
            i = j + 1
            continue
        if first and not t.quoted and t.text == "import":
            if t.last_on_line or not tokens[i + 1].last_on_line:
                raise CorefileError(t.path, t.line, "import takes one file pattern or snippet name")
            out.extend(_import(t, tokens[i + 1].text, env, read, snippets, depth))
            i += 2
            continue
        out.append(t)
        i += 1
    return out


def _import(at: Token, what: str, env: Mapping[str, str], read: Callable[[str], str],
            snippets: dict[str, list[Token]], depth: int) -> list[Token]:
    if depth >= MAX_IMPORT_DEPTH:
        raise CorefileError(at.path, at.line, f"imports nested more than {MAX_IMPORT_DEPTH} deep (a cycle?)")
    if what in snippets:
        return expand_imports(list(snippets[what]), env, read, snippets, depth + 1)
    pattern = what if os.path.isabs(what) else os.path.join(os.path.dirname(at.path), what)
    if glob.has_magic(pattern):
        files = sorted(glob.glob(pattern))
    else:
        files = [pattern]
    out: list[Token] = []
    for f in files:
        try:
            text = read(f)
        except (OSError, UnicodeDecodeError) as e:
            raise CorefileError(at.path, at.line, f"import {what}: {e}") from None
        out.extend(expand_imports(tokenize(text, f, env), env, read, snippets, depth + 1))
    return out


class _Parser:
    def __init__(self, tokens: list[Token], path: str) -> None:
        self.toks, self.pos, self.path = tokens, 0, path

    def error(self, tok: Token, msg: str) -> CorefileError:
        return CorefileError(tok.path or self.path, tok.line, msg)

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> Token:
        t = self.toks[self.pos]
        self.pos += 1
        return t

    @staticmethod
    def is_open(t: Token) -> bool:
        return t.text == "{" and not t.quoted

    @staticmethod
    def is_close(t: Token) -> bool:
        return t.text == "}" and not t.quoted

    def server_blocks(self) -> list[ServerBlock]:
        blocks = []
        while self.peek() is not None:
            first = self.take()
            if self.is_open(first) or self.is_close(first):
                raise self.error(first, f"expected a server block address, found '{first.text}'")
            keys_toks = [first]
            # Keys go on until '{' on the same line; a trailing comma continues them on the next line.
            while True:
                t = self.peek()
                if t is None:
                    raise self.error(keys_toks[-1], f"server block '{first.text}' has no '{{'")
                if self.is_open(t):
                    self.take()
                    if not t.last_on_line:
                        raise self.error(t, "unexpected text after '{' (a directive starts on its own line)")
                    break
                if t.line != keys_toks[-1].line and not keys_toks[-1].text.endswith(","):
                    raise self.error(keys_toks[-1], f"server block '{first.text}' has no '{{' at the end of its line")
                keys_toks.append(self.take())
            keys = tuple(k for t in keys_toks for k in t.text.split(",") if k)
            if not keys:
                raise self.error(first, "server block without an address")
            blocks.append(ServerBlock(keys, first.line, self.directives(first), first.path))
        return blocks

    def directives(self, opener: Token) -> tuple[Directive, ...]:
        """Directives up to and including the matching '}'."""
        out = []
        while True:
            t = self.peek()
            if t is None:
                raise self.error(opener, "unclosed '{' (missing '}')")
            if self.is_close(t):
                self.take()
                return tuple(out)
            if self.is_open(t):
                raise self.error(t, "unexpected '{'")
            out.append(self.directive())

    def directive(self) -> Directive:
        name = self.take()
        args: list[str] = []
        cur = name
        while not cur.last_on_line:
            t = self.peek()
            if self.is_open(t):
                self.take()
                if not t.last_on_line:
                    raise self.error(t, "unexpected text after '{' (a directive starts on its own line)")
                return Directive(name.text, tuple(args), name.line, self.directives(name), name.path)
            if self.is_close(t):  # '}' closing the enclosing block on the same line
                break
            cur = self.take()
            args.append(cur.text)
        return Directive(name.text, tuple(args), name.line, None, name.path)


def parse(text: str, path: str = "Corefile", env: Mapping[str, str] | None = None,
          read: Callable[[str], str] = _read) -> list[ServerBlock]:
    """Server blocks of a Corefile; CorefileError (with the file and line) for anything malformed.
    ``read`` reads imported files."""
    env = {} if env is None else env
    blocks = _Parser(expand_imports(tokenize(text, path, env), env, read), path).server_blocks()
    if not blocks:
        raise CorefileError(path, 1, "no server block")
    return blocks
