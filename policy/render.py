"""Verdicts -> ``ipset restore`` and ``iptables-restore`` text. Pure and deterministic.

Layout (filter table, one address family):

- ``FORWARD`` and ``INPUT`` jump first to ``PODNET-POL-FORWARD`` / ``PODNET-POL-INPUT``
  (the jumps are ensured by the apply layer);
- each of those starts with ``-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN``:
  replies and established flows are never judged (and never accepted by us
  either: what follows in the built-in chain decides as before);
- ``PODNET-POL-FORWARD`` sends packets *from* an egress-isolated local pod to its
  ``PODNET-NP-E-*`` chain, then packets *to* an ingress-isolated local pod to its
  ``PODNET-NP-I-*`` chain, and last drops packets from (to) an address in the pending
  egress (ingress) set (:func:`pending_sets`); ``PODNET-POL-INPUT`` only the egress part
  (a pod talking to the node's own addresses);
- a pod chain RETURNs what one of its :class:`Allow` entries matches and ends in
  ``DROP`` (after a rate-limited ``NFLOG`` to group ``NFLOG_GROUP`` with the chain as prefix, when asked): an isolated pod fails closed, and a packet must pass both the
  source's egress and the destination's ingress chain;
- with AdminNetworkPolicy or BaselineAdminNetworkPolicy entries, a pod chain
  starts with the admin entries in order (Allow: ``RETURN``, Deny: ``DROP``,
  Pass: ``-g`` to the pod's stage chain ``PODNET-NP-IP-*``/``PODNET-NP-EP-*``,
  which holds what follows when any entry passes); then the NetworkPolicy part
  above when NetworkPolicies isolate the direction, else the baseline entries
  (Allow ``RETURN``, Deny ``DROP``) and, past them, ``RETURN``: a pod chain is
  entered for a direction only when something judges it;
- traffic the node itself sends (kubelet probes) goes through OUTPUT, which
  policy never touches; FORWARD sees the destination after the proxy's DNAT
  and the source before any SNAT (POSTROUTING), so a Service client is judged
  by its own address and the backend pod's.

Peer sets are ipsets named ``PODNET-PS<family>-<hash of identity>``:
``hash:ip`` for pod addresses, ``hash:net`` for a rule's plain ipBlocks (one set for
all of them) and for each ipBlock with excepts (its excepts added
with ``nomatch``, which the kernel checks most specific prefix first; a
``/0`` block, which hash:net cannot hold, is stored as its two halves).
Contents are written into ``PODNET-PT<family>-<same hash>`` and swapped in, so a set
changes atomically. Every interpolated value is checked again against
``[A-Za-z0-9./:_-]``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from podnet.policy.model import AddressSet, AdminEntry, Allow, PodVerdict
from podnet.policy.nflog import NFLOG_GROUP

__all__ = ["Rendered", "SetSpec", "render", "address_set_spec", "pending_sets", "set_name", "set_prefixes", "pod_chains", "stage_chains", "temp_name",
           "FORWARD", "INPUT",
           "JUMPS", "CHAIN_PREFIXES", "SET_PREFIX", "TEMP_PREFIX", "UnsafeValue"]

FORWARD = "PODNET-POL-FORWARD"
INPUT = "PODNET-POL-INPUT"
JUMPS = (("filter", "FORWARD", f"-j {FORWARD}"), ("filter", "INPUT", f"-j {INPUT}"))
CHAIN_PREFIXES = ("PODNET-POL-", "PODNET-NP-")
SET_PREFIX = "PODNET-PS"
TEMP_PREFIX = "PODNET-PT"
MAXELEM = 1 << 20

_SAFE = re.compile(r"[A-Za-z0-9./:_-]+")


class UnsafeValue(ValueError):
    """A value about to be written into restore text is not a plain token."""


def _tok(value: object) -> str:
    s = str(value)
    if not _SAFE.fullmatch(s):
        raise UnsafeValue(f"refusing to render {s[:60]!r}")
    return s


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16].upper()


def set_prefixes(family: int) -> tuple[str, str]:
    """(set prefix, temporary set prefix) of one family: each family's programmer owns its own."""
    return f"{SET_PREFIX}{family}-", f"{TEMP_PREFIX}{family}-"


def set_name(identity: str, family: int) -> str:
    return set_prefixes(family)[0] + _hash(f"{family}|{identity}")


def temp_name(name: str) -> str:
    return TEMP_PREFIX + name.removeprefix(SET_PREFIX)


def pending_sets(family: int) -> tuple[str, str]:
    """(ingress, egress) ``hash:ip`` sets of pods whose own chains are still being written: the dispatch
    chains drop new connections to (from) their addresses, so a new pod starts isolated and its allow
    rules follow. The programmer creates them and alone changes their members."""
    prefix = set_prefixes(family)[0]
    return prefix + "PENDING-I", prefix + "PENDING-E"


def pod_chains(key: str) -> tuple[str, str]:
    """(ingress chain, egress chain) of a pod: 26 characters, under the 28 iptables allows."""
    h = _hash(key)[:14]
    return "PODNET-NP-I-" + h, "PODNET-NP-E-" + h


def stage_chains(key: str) -> tuple[str, str]:
    """(ingress, egress) chains a Pass entry goes to: the NetworkPolicy-then-baseline stage (27 characters)."""
    h = _hash(key)[:14]
    return "PODNET-NP-IP-" + h, "PODNET-NP-EP-" + h


@dataclass(frozen=True, slots=True)
class SetSpec:
    name: str
    kind: str
    """``hash:ip`` or ``hash:net``."""
    family: int
    members: tuple[str, ...]
    nomatch: tuple[str, ...] = ()

    def restore_lines(self) -> list[str]:
        """Create the set (if missing) and swap in the contents through the temporary set."""
        fam = "inet" if self.family == 4 else "inet6"
        tmp = temp_name(self.name)
        head = f"{self.kind} family {fam} hashsize 1024 maxelem {MAXELEM}"
        out = [f"create {_tok(self.name)} {head} -exist", f"create {_tok(tmp)} {head} -exist", f"flush {tmp}"]
        out += [f"add {tmp} {_tok(m)}" for m in self.members]
        out += [f"add {tmp} {_tok(m)} nomatch" for m in self.nomatch]
        out += [f"swap {tmp} {self.name}", f"destroy {tmp}"]
        return out


@dataclass(frozen=True, slots=True)
class Rendered:
    iptables: str
    """``iptables-restore --noflush`` input for our chains (empty chains included)."""
    chains: tuple[str, ...]
    sets: Mapping[str, SetSpec]
    rules: int
    """Rules written, dispatch chains included."""


def _block_members(cidr: str, family: int) -> tuple[str, ...]:
    if cidr.endswith("/0"):
        return ("0.0.0.0/1", "128.0.0.0/1") if family == 4 else ("::/1", "8000::/1")
    return (cidr,)


def address_set_spec(aset: AddressSet, family: int) -> SetSpec | None:
    """The ipset holding ``aset`` in ``family`` exactly as :func:`render` writes it (None: ``aset`` is of
    the other family)."""
    return _set_spec(aset, family)


def _set_spec(aset: AddressSet, family: int) -> SetSpec | None:
    """The ipset for ``aset`` in ``family``, or None when the set is of the other family."""
    name = set_name(aset.identity, family)
    if aset.block is not None:
        if aset.block.family != family:
            return None
        members = _block_members(aset.block.cidr, family)
        return SetSpec(name, "hash:net", family, members, tuple(aset.block.excepts))
    if aset.cidrs:
        members = tuple(m for c in aset.family_members(family) for m in _block_members(c, family))
        return SetSpec(name, "hash:net", family, members) if members else None
    return SetSpec(name, "hash:ip", family, aset.family_members(family))


_MISSING: Any = object()
LOG_LIMIT = "-m limit --limit 10/second --limit-burst 20"
"""At most 10 logged packets a second per pod chain (bursts of 20): a flood never floods the log."""


def _matches(chain: str, allow: Allow, direction: str, family: int, sets: dict[str, SetSpec],
             cache: dict[str, SetSpec | None], target: str) -> list[str]:
    """The rules sending what ``allow`` matches to ``target`` (``-j RETURN``, ``-j DROP``, ``-g CHAIN``);
    none when its peer set is of the other family. ``cache``: identity -> set spec, shared by one render."""
    match = ""
    if allow.peer is not None:
        spec = cache.get(allow.peer.identity, _MISSING)
        if spec is _MISSING:
            spec = cache[allow.peer.identity] = _set_spec(allow.peer, family)
        if spec is None:
            return []
        sets[spec.name] = spec
        match = f" -m set --match-set {spec.name} {direction}"
    if allow.ports is None:
        return [f"-A {chain}{match} {target}"]
    out = []
    for r in allow.ports:
        proto = _tok(r.protocol.lower())
        if r.lo == 0:
            out.append(f"-A {chain}{match} -p {proto} {target}")
        elif r.lo == r.hi:
            out.append(f"-A {chain}{match} -p {proto} --dport {_tok(r.lo)} {target}")
        else:
            out.append(f"-A {chain}{match} -p {proto} --dport {_tok(r.lo)}:{_tok(r.hi)} {target}")
    return out


def _drop(chain: str, log_denied: bool, match: list[str] | None = None) -> list[str]:
    """DROP (after a rate-limited NFLOG when asked); ``match``: the rules' ``-j DROP`` lines to prefix."""
    if match is None:
        match = [f"-A {chain} -j DROP"]
    out = []
    for line in match:
        if log_denied:
            out.append(line.removesuffix(" -j DROP") + f" {LOG_LIMIT} -j NFLOG --nflog-group {NFLOG_GROUP} --nflog-prefix {chain}:")
        out.append(line)
    return out


def _allow_rules(chain: str, allows: tuple[Allow, ...], direction: str, family: int,
                 sets: dict[str, SetSpec], cache: dict[str, SetSpec | None], log_denied: bool = False) -> list[str]:
    """The NetworkPolicy stage: RETURN what an allow matches, DROP the rest."""
    out = []
    for a in allows:
        out += _matches(chain, a, direction, family, sets, cache, "-j RETURN")
    return out + _drop(chain, log_denied)


def _entry_rules(chain: str, entries: tuple[AdminEntry, ...], direction: str, family: int, sets: dict[str, SetSpec],
                 cache: dict[str, SetSpec | None], log_denied: bool, pass_to: str) -> list[str]:
    """Ordered admin or baseline entries: Allow RETURNs, Deny DROPs, Pass goes to ``pass_to``."""
    out = []
    for e in entries:
        if e.action == "Allow":
            out += _matches(chain, e.match, direction, family, sets, cache, "-j RETURN")
        elif e.action == "Deny":
            out += _drop(chain, log_denied, _matches(chain, e.match, direction, family, sets, cache, "-j DROP"))
        else:
            out += _matches(chain, e.match, direction, family, sets, cache, f"-g {pass_to}")
    return out


def _direction(chain: str, stage: str, admin: tuple[AdminEntry, ...], allows: tuple[Allow, ...] | None,
               baseline: tuple[AdminEntry, ...], direction: str, family: int, sets: dict[str, SetSpec],
               cache: dict[str, SetSpec | None], log_denied: bool) -> tuple[list[str], list[str]]:
    """(chains, rules) judging one direction of one pod: admin entries in ``chain``, then the
    NetworkPolicy stage (or the baseline entries, then RETURN). A Pass entry goes to ``stage``, which
    holds the NetworkPolicy stage when any entry passes; otherwise it follows inline."""
    passes = any(e.action == "Pass" for e in admin)
    chains = [chain, stage] if passes else [chain]
    where = stage if passes else chain
    body = _entry_rules(chain, admin, direction, family, sets, cache, log_denied, stage)
    if passes:
        body.append(f"-A {chain} -g {stage}")
    if allows is not None:
        body += _allow_rules(where, allows, direction, family, sets, cache, log_denied)
    else:
        body += _entry_rules(where, baseline, direction, family, sets, cache, log_denied, stage)
    return chains, body


def render(verdicts: Mapping[str, PodVerdict], family: int, stale_chains: tuple[str, ...] = (),
           log_denied: bool = False) -> Rendered:
    """The filter-table text for ``family`` (4 or 6); ``stale_chains`` are flushed and deleted.
    ``log_denied``: a rate-limited NFLOG copy of the packet (prefix: the pod's chain) before each DROP,
    read by :mod:`podnet.policy.nflog`."""
    sets: dict[str, SetSpec] = {}
    cache: dict[str, SetSpec | None] = {}
    chains: list[str] = [FORWARD, INPUT]
    body: list[str] = []
    est = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    fwd_e: list[str] = [f"-A {FORWARD} {est}"]
    fwd_i: list[str] = []
    inp: list[str] = [f"-A {INPUT} {est}"]
    six = family == 6
    for key in sorted(verdicts):
        v = verdicts[key]
        ips = [_tok(ip) for ip in v.ips if (":" in ip) == six]
        if not ips:
            continue
        ich, ech = pod_chains(key)
        isg, esg = stage_chains(key)
        suffix = "/128" if six else "/32"
        if v.judges_egress:
            names, rules = _direction(ech, esg, v.admin_egress, v.egress, v.baseline_egress, "dst", family, sets,
                                      cache, log_denied)
            chains += names
            body += rules
            for ip in ips:
                fwd_e.append(f"-A {FORWARD} -s {ip}{suffix} -j {ech}")
                inp.append(f"-A {INPUT} -s {ip}{suffix} -j {ech}")
        if v.judges_ingress:
            names, rules = _direction(ich, isg, v.admin_ingress, v.ingress, v.baseline_ingress, "src", family, sets,
                                      cache, log_denied)
            chains += names
            body += rules
            for ip in ips:
                fwd_i.append(f"-A {FORWARD} -d {ip}{suffix} -j {ich}")
    pend_i, pend_e = pending_sets(family)
    fwd_i += _drop(FORWARD, log_denied, [f"-A {FORWARD} -m set --match-set {pend_e} src -j DROP",
                                         f"-A {FORWARD} -m set --match-set {pend_i} dst -j DROP"])
    inp += _drop(INPUT, log_denied, [f"-A {INPUT} -m set --match-set {pend_e} src -j DROP"])
    want = set(chains)
    stale = sorted(c for c in stale_chains if c not in want and c.startswith(CHAIN_PREFIXES))
    lines = ["*filter"]
    lines += [f":{c} - [0:0]" for c in chains]
    lines += [f":{c} - [0:0]" for c in stale]
    rules = fwd_e + fwd_i + inp + body
    lines += rules
    lines += [f"-X {c}" for c in stale]
    lines.append("COMMIT")
    return Rendered("\n".join(lines) + "\n", tuple(chains), sets, len(rules))
