"""The ``rewrite`` plugin's name rules: the query name is rewritten before it is answered, and the
reply is made to match the client's question again.

Rules (CoreDNS's syntax, ``name`` field only)::

    rewrite [continue|stop] name [exact|prefix|suffix|substring|regex] FROM TO [answer auto | answer name FROM TO]
    rewrite [continue|stop] {
        name regex FROM TO
        answer name FROM TO
    }

Matching is on the lower-cased name: ``exact`` (the default) equal; ``prefix``/``suffix`` at
either end, the matched part replaced; ``substring`` every occurrence replaced; ``regex`` searched
in the fully qualified name (trailing dot) with ``{1}``... in TO standing for its groups.
``stop`` (the default) ends at the first rule that matched; ``continue`` goes on with the rewritten
name.

Replies: the question is always the client's own again (case kept). Records owned by the rewritten
name get the client's name back for exact/prefix/suffix/substring rules and for regex rules with
``answer auto``; ``answer name FROM TO`` rewrites every owner name matching the regex FROM.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Sequence

from podnet.dns import names
from podnet.dns.wire import OPT, FormErr, WireRR, encode_wire_rr, read_wire_name, walk_rrs

__all__ = ["RewriteRule", "parse_rewrite", "apply_rules", "rewrite_query", "restore_reply", "Rewritten"]

KINDS = ("exact", "prefix", "suffix", "substring", "regex")
_GROUP = re.compile(r"\{(\d+)\}")


@dataclass(frozen=True)
class RewriteRule:
    kind: str
    src: str
    dst: str
    stop: bool = True
    auto: bool = True
    """Owner names equal to the rewritten name are given the client's name back."""
    answer_src: str | None = None
    answer_dst: str | None = None

    def match(self, name: str) -> str | None:
        """The rewritten name, or None when the rule does not apply (``name`` lower-case, no trailing dot)."""
        k, s, d = self.kind, self.src, self.dst
        if k == "exact":
            return d if name == s else None
        if k == "prefix":
            return d + name[len(s):] if name.startswith(s) else None
        if k == "suffix":
            return name[: len(name) - len(s)] + d if name.endswith(s) else None
        if k == "substring":
            return name.replace(s, d) if s in name else None
        m = re.search(s, name + ".")
        if m is None:
            return None
        return _expand(d, m).lower().rstrip(".")


def _expand(template: str, m: re.Match) -> str:
    def group(g: re.Match) -> str:
        i = int(g.group(1))
        return (m.group(i) or "") if i <= (m.re.groups or 0) else g.group(0)

    return _GROUP.sub(group, template)


def _name(text: str) -> str:
    return text.strip().lower().rstrip(".")


def parse_rewrite(args: Sequence[str], block: Sequence[tuple[str, Sequence[str]]] | None) -> list[RewriteRule]:
    """Rules of one ``rewrite`` directive; ValueError (one line) for anything else."""
    args = list(args)
    stop = True
    if args and args[0] in ("continue", "stop"):
        stop = args.pop(0) == "stop"
    if block is not None:
        if args:
            raise ValueError("rewrite with a block takes only continue|stop before '{'")
        flat: list[str] = []
        for name, a in block:
            flat += [name, *a]
        args = flat
    if not args:
        raise ValueError("rewrite needs a field")
    if args[0] != "name":
        raise ValueError(f"rewrite field {args[0]!r} is not supported by podnet-dns (name rules only)")
    rest = args[1:]
    kind = "exact"
    if rest and rest[0] in KINDS:
        kind = rest.pop(0)
    if len(rest) < 2:
        raise ValueError("rewrite name needs FROM and TO")
    src, dst, rest = rest[0], rest[1], rest[2:]
    if kind == "regex":
        try:
            re.compile(src)
        except re.error as e:
            raise ValueError(f"invalid regex {src!r}: {e}") from None
    else:
        src, dst = _name(src), _name(dst)
        if not src:
            raise ValueError("rewrite FROM must not be empty")
    auto = kind != "regex"
    answer_src = answer_dst = None
    if rest:
        if rest[0] != "answer" or len(rest) < 2:
            raise ValueError(f"unexpected {rest[0]!r} after rewrite name FROM TO (want 'answer auto' or 'answer name FROM TO')")
        if rest[1:] == ["auto"]:
            auto = True
        elif rest[1] == "name" and len(rest) == 4:
            answer_src, answer_dst = rest[2], rest[3]
            try:
                re.compile(answer_src)
            except re.error as e:
                raise ValueError(f"invalid regex {answer_src!r}: {e}") from None
        elif rest[1] == "value":
            raise ValueError("'answer value' is not supported by podnet-dns")
        else:
            raise ValueError(f"unexpected {' '.join(rest)!r} (want 'answer auto' or 'answer name FROM TO')")
    return [RewriteRule(kind, src, dst, stop, auto, answer_src, answer_dst)]


@dataclass(frozen=True)
class Rewritten:
    name: str
    """The name to answer (lower-case, no trailing dot)."""
    rules: tuple[RewriteRule, ...]
    """The rules that applied, in order."""


def apply_rules(rules: Sequence[RewriteRule], qname: str) -> Rewritten | None:
    """The rewritten query name and the rules used, or None when no rule matched."""
    name, used = qname, []
    for r in rules:
        new = r.match(name)
        if new is None:
            continue
        names.to_wire(new)  # ValueError: the rewrite made an impossible name
        name = new
        used.append(r)
        if r.stop:
            break
    return Rewritten(name, tuple(used)) if used else None


def rewrite_query(data: bytes, question_len: int, new_name: str) -> bytes:
    """``data`` with its question name replaced (type, class and every other section kept)."""
    end = 12 + question_len
    return data[:12] + names.to_wire(new_name) + data[end - 4 :]


def restore_reply(reply: bytes, question: bytes, rw: Rewritten, limit: int) -> bytes:
    """``reply`` to the rewritten query, with the client's ``question`` back and owner names reverted.

    Records are written uncompressed; a reply over ``limit`` bytes loses its additional records
    (OPT kept), then everything else with TC set."""
    try:
        _, end = read_wire_name(reply, 12)
        pos = end + 4
        an, ns, ar = struct.unpack_from("!HHH", reply, 6)
        answer, pos = walk_rrs(reply, pos, an)
        authority, pos = walk_rrs(reply, pos, ns)
        additional, pos = walk_rrs(reply, pos, ar)
    except (FormErr, struct.error, IndexError):
        return reply[:2] + reply[2:4] + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
    rewritten = names.to_wire(rw.name)
    original = question[:-4]
    auto = any(r.auto for r in rw.rules)
    answer_rules = [(re.compile(r.answer_src), r.answer_dst) for r in rw.rules if r.answer_src is not None]

    def owner(rr: WireRR) -> WireRR:
        if rr.rtype == OPT:
            return rr
        if auto and rr.name.lower() == rewritten:
            return rr._replace(name=original)
        if answer_rules:
            text = names.from_wire_labels(_labels(rr.name)) + "."
            for rx, dst in answer_rules:
                m = rx.search(text)
                if m is not None:
                    try:
                        return rr._replace(name=names.to_wire(_expand(dst, m).rstrip(".")))
                    except ValueError:
                        return rr
        return rr

    sections = [[owner(rr) for rr in s] for s in (answer, authority, additional)]
    flags = struct.unpack_from("!H", reply, 2)[0]

    def build(secs, flags) -> bytes:
        body = b"".join(encode_wire_rr(rr, rr.ttl) for s in secs for rr in s)
        return reply[:2] + struct.pack("!HHHHH", flags, 1, *(len(s) for s in secs)) + question + body

    out = build(sections, flags)
    if len(out) > limit:
        sections[2] = [rr for rr in sections[2] if rr.rtype == OPT]
        out = build(sections, flags)
    if len(out) > limit:
        out = build([[], [], sections[2]], flags | 0x0200)
    return out


def _labels(wire: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(wire) and wire[i]:
        out.append(wire[i + 1 : i + 1 + wire[i]])
        i += 1 + wire[i]
    return out
