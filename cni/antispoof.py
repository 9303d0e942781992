"""Anti-spoofing: a pod sends only with its own source address.

Every packet a pod sends arrives in the node namespace on its node-side veth
``pnc<hash>`` (:mod:`podnet.cni.netops`), and the node's only route back to the
pod's address is ``<podIP>/32 dev pnc<hash>`` (``/128`` for IPv6). A strict
reverse-path check on those interfaces is therefore exactly "the source is one
of this pod's own addresses": a packet whose source routes out of any other
interface (another local pod, a pod of another node, the node itself, an
outside address) is dropped before conntrack, the proxy's DNAT or any policy
sees it. Without it a pod could borrow another pod's address and pass every
address-based NetworkPolicy, and the no-NAT guarantee (a peer sees the real
pod address) would mean nothing.

The check is one static rule per family in the node namespace's raw table, the
same for every pod, so an ADD costs nothing:

    -A PREROUTING -i pnc+ -j PODNET-ANTISPOOF
    -A PODNET-ANTISPOOF -m rpfilter -j RETURN
    -A PODNET-ANTISPOOF -j DROP

``-m rpfilter`` (xt_rpfilter) is the kernel's reverse-path lookup for both
families; IPv6 has no ``rp_filter`` sysctl, and the IPv4 sysctl is the maximum
of ``all`` and the interface's value, a node-wide setting another component may
own. It passes the unspecified source (IPv6 DAD, ``0.0.0.0`` to broadcast) and
looks link-local sources up on the arriving interface, so neighbour discovery
keeps working. Calico does the same in its raw ``PREROUTING`` (``rpfilter
--validmark --invert -j DROP`` for packets from workload interfaces).

The CNI daemon is the one writer of ``PODNET-ANTISPOOF`` and of its jump: it
owns the ``pnc`` interfaces and the routes the check reads, and the guarantee
does not depend on the policy engine running. The chain's DROP counter is the
number of spoofed packets dropped (``podnet_cni_spoofed_packets``).

:func:`restore_text` and :func:`parse_save` are pure; :class:`KernelTables` is
the side-effect layer (``iptables-restore``/``iptables-save``, node namespace).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Gauge

from podnet.cni.netops import HOST_PREFIX

__all__ = ["CHAIN", "JUMP", "RULES", "State", "restore_text", "parse_save", "Tables", "KernelTables", "ensure",
           "SPOOFED"]

CHAIN = "PODNET-ANTISPOOF"
JUMP = f"-A PREROUTING -i {HOST_PREFIX}+ -j {CHAIN}"
RULES = (f"-A {CHAIN} -m rpfilter -j RETURN", f"-A {CHAIN} -j DROP")
_COUNTED = re.compile(r"^\[(\d+):(\d+)\] (.*)$")

SPOOFED = Gauge("podnet_cni_spoofed_packets", "Packets from pods with a source address not their own, dropped "
                "(the anti-spoofing DROP counter, read with every route re-check).", ["family"])


def restore_text(jump: bool) -> str:
    """``iptables-restore --noflush`` input (either family): the chain, flushed and refilled by its
    declaration, and (``jump``) the jump inserted first in raw PREROUTING."""
    lines = ["*raw", f":{CHAIN} - [0:0]", *RULES]
    if jump:
        lines.append(JUMP.replace("-A PREROUTING", "-I PREROUTING 1", 1))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class State:
    chain_intact: bool
    """The chain holds exactly :data:`RULES`."""
    jumps: int
    """How many times raw PREROUTING jumps to the chain (1 when intact)."""
    dropped: int
    """Packets counted by the chain's DROP rule."""

    @property
    def intact(self) -> bool:
        return self.chain_intact and self.jumps == 1


def parse_save(text: str) -> State:
    """The check's state from ``iptables-save -c -t raw`` output (either family)."""
    rules: list[str] = []
    jumps = dropped = 0
    for line in text.splitlines():
        m = _COUNTED.match(line)
        packets, rule = (int(m.group(1)), m.group(3)) if m else (0, line)
        if rule == JUMP:
            jumps += 1
        elif rule.startswith(f"-A {CHAIN} "):
            rules.append(rule)
            if rule == RULES[-1]:
                dropped += packets
    return State(tuple(rules) == RULES, jumps, dropped)


class Tables(Protocol):
    def save(self, family: int) -> str:
        """``iptables-save -c -t raw`` of the node namespace for ``family``."""

    def restore(self, family: int, text: str) -> None:
        """``iptables-restore --noflush`` of ``text``; raises on failure."""


class KernelTables:
    """The node namespace's raw table through the iptables tools (``--wait`` for the xtables lock)."""

    def save(self, family: int) -> str:
        tool = "iptables-save" if family == 4 else "ip6tables-save"
        return subprocess.run([tool, "-c", "-t", "raw"], check=True, capture_output=True, text=True).stdout

    def restore(self, family: int, text: str) -> None:
        tool = "iptables-restore" if family == 4 else "ip6tables-restore"
        subprocess.run([tool, "--noflush", "--wait"], input=text, check=True, capture_output=True, text=True)


def ensure(tables: Tables, family: int) -> State:
    """Read the check of ``family``; rewrite it when it is not exactly as rendered (missing, changed,
    or jumped to more than once: extra jumps are removed). Returns the state after the repair."""
    state = parse_save(tables.save(family))
    if state.intact:
        return state
    text = restore_text(jump=state.jumps == 0)
    if state.jumps > 1:
        text = text.replace("COMMIT\n", "".join(f"{JUMP.replace('-A', '-D', 1)}\n" for _ in range(state.jumps - 1))
                            + "COMMIT\n")
    tables.restore(family, text)
    return parse_save(tables.save(family))
