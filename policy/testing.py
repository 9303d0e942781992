"""Test helpers for podnet.policy: raw-object builders and an in-memory kernel (the informer fake is
:mod:`podnet.kube.testing`'s).

:class:`FakeKernel` implements :class:`podnet.policy.kernel.Kernel`. It keeps
ipsets and the filter table as data, applies ``ipset restore`` and
``iptables-restore --noflush`` text all-or-nothing (a reference to a missing
set or chain, or destroying a set a rule still uses, fails like the real tools),
and :meth:`FakeKernel.forward` walks FORWARD for one new packet (``-j`` jumps and
returns, ``-g`` goes to a chain whose verdict, RETURN included, is the caller's),
so tests can check what the rendered rules do, not only what they say.
"""

from __future__ import annotations

import copy
import ipaddress
import shlex
from typing import Any, Sequence

from podnet.policy.kernel import KernelError

__all__ = ["FakeKernel", "raw_pod", "raw_ns", "raw_policy"]


def raw_ns(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels)}}


def raw_pod(ns: str, name: str, ip: str, node: str = "node-a", labels: dict[str, str] | None = None,
            ports: tuple[tuple[str, int, str], ...] = (), host_network: bool = False, phase: str = "Running") -> dict[str, Any]:
    """``ports``: (name, containerPort, protocol)."""
    return {
        "metadata": {"namespace": ns, "name": name, "labels": dict(labels or {})},
        "spec": {"nodeName": node, "hostNetwork": host_network,
                 "containers": [{"name": "c", "ports": [{"name": n, "containerPort": p, "protocol": proto}
                                                        for n, p, proto in ports]}]},
        "status": {"phase": phase, "podIP": ip},
    }


def raw_policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


class FakeKernel:
    def __init__(self, family: int = 4) -> None:
        self.family = family
        self.sets: dict[str, tuple[str, list[str], list[str]]] = {}
        """name -> (type, members, nomatch members)."""
        self.chains: dict[str, list[str]] = {"INPUT": [], "FORWARD": [], "OUTPUT": []}
        self.calls: list[str] = []
        self._parsed: dict[str, list[str]] = {}
        self.hits: dict[tuple[str, int], int] = {}
        """(chain, rule index) -> packets, counted by :meth:`walk` as the kernel counts."""
        self.logged: list[tuple[str, str, str, str, int]] = []
        """(chain, src, dst, proto, dport) for every LOG or NFLOG rule a walked packet hit."""
        self.fail_next: str | None = None

    def _maybe_fail(self, what: str) -> None:
        self.calls.append(what)
        if self.fail_next == what:
            self.fail_next = None
            raise KernelError(f"{what}: injected failure")

    # -- Kernel protocol
    async def ipset_restore(self, text: str) -> None:
        self._maybe_fail("ipset_restore")
        sets = copy.deepcopy(self.sets)
        for n, line in enumerate(text.splitlines(), 1):
            t = line.split()
            if not t:
                continue
            op, name = t[0], t[1]
            if op == "create":
                if name in sets and "-exist" not in t:
                    raise KernelError(f"ipset line {n}: set exists")
                sets.setdefault(name, (t[2], [], []))
            elif name not in sets:
                raise KernelError(f"ipset line {n}: no set {name}")
            elif op == "flush":
                sets[name] = (sets[name][0], [], [])
            elif op == "add":
                (sets[name][2] if "nomatch" in t else sets[name][1]).append(t[2])
            elif op == "swap":
                other = t[2]
                if other not in sets or sets[other][0] != sets[name][0]:
                    raise KernelError(f"ipset line {n}: cannot swap")
                sets[name], sets[other] = sets[other], sets[name]
            elif op == "destroy":
                if self._set_used(name):
                    raise KernelError(f"ipset line {n}: set in use")
                del sets[name]
            else:
                raise KernelError(f"ipset line {n}: unknown command {op}")
        self.sets = sets

    async def ipset_update(self, dels: Sequence[tuple[str, str]], adds: Sequence[tuple[str, str]]) -> None:
        self._maybe_fail("ipset_update")
        for name, _m in (*dels, *adds):
            if name not in self.sets:
                raise KernelError(f"ipset netlink: set {name}: No such file or directory")
        for name, m in dels:
            if m in self.sets[name][1]:
                self.sets[name][1].remove(m)
        for name, m in adds:
            if m not in self.sets[name][1]:
                self.sets[name][1].append(m)

    def _set_used(self, name: str) -> bool:
        return any(f"--match-set {name} " in rule for rules in self.chains.values() for rule in rules)

    async def ipset_destroy(self, name: str) -> None:
        self._maybe_fail("ipset_destroy")
        if name not in self.sets:
            raise KernelError(f"no set {name}")
        if self._set_used(name):
            raise KernelError(f"set {name} in use")
        del self.sets[name]

    async def ipset_names(self) -> set[str]:
        return set(self.sets)

    async def iptables_restore(self, text: str) -> None:
        self._maybe_fail("iptables_restore")
        chains = copy.deepcopy(self.chains)
        lines = text.splitlines()
        if lines[:1] != ["*filter"] or lines[-1:] != ["COMMIT"]:
            raise KernelError("iptables-restore: want one *filter ... COMMIT")
        for n, line in enumerate(lines[1:-1], 2):
            if line.startswith(":"):
                chains[line[1:].split()[0]] = []
            elif line.startswith("-A "):
                t = line.split()
                if t[1] not in chains:
                    raise KernelError(f"iptables-restore line {n}: no chain {t[1]}")
                target = t[t.index("-j" if "-j" in t else "-g") + 1]
                if target not in ("RETURN", "DROP", "ACCEPT", "LOG", "NFLOG") and target not in chains:
                    raise KernelError(f"iptables-restore line {n}: no chain {target}")
                if "--match-set" in t and t[t.index("--match-set") + 1] not in self.sets:
                    raise KernelError(f"iptables-restore line {n}: no set")
                chains[t[1]].append(" ".join(t[2:]))
            elif line.startswith("-X "):
                name = line.split()[1]
                if chains.get(name) or any(r[-len(name) - 3:] in (f"-j {name}", f"-g {name}")
                                           for rs in chains.values() for r in rs):
                    raise KernelError(f"iptables-restore line {n}: chain {name} in use")
                chains.pop(name, None)
            else:
                raise KernelError(f"iptables-restore line {n}: cannot parse")
        self.chains = chains

    async def filter_chains(self) -> set[str]:
        return set(self.chains)

    async def filter_counters(self) -> str:
        lines = ["*filter"] + [f":{c} - [0:0]" for c in self.chains]
        for c, rules in self.chains.items():
            lines += [f"[{self.hits.get((c, i), 0)}:0] -A {c} {r}" for i, r in enumerate(rules)]
        return "\n".join(lines + ["COMMIT"]) + "\n"

    async def ensure_first(self, table: str, chain: str, rule: str) -> bool:
        if rule in self.chains[chain]:
            return False
        self.chains[chain].insert(0, rule)
        return True

    async def delete_rule(self, table: str, chain: str, rule: str) -> None:
        while rule in self.chains.get(chain, []):
            self.chains[chain].remove(rule)

    # -- evaluation
    def _in_set(self, name: str, ip: str) -> bool:
        kind, members, nomatch = self.sets[name]
        addr = ipaddress.ip_address(ip)
        if kind == "hash:ip":
            return any(addr == ipaddress.ip_address(m) for m in members)
        best, hit = -1, False
        for m, ok in [(m, True) for m in members] + [(m, False) for m in nomatch]:
            net = ipaddress.ip_network(m)
            if addr.version == net.version and addr in net and net.prefixlen > best:
                best, hit = net.prefixlen, ok
        return hit

    def _match(self, rule: list[str], src: str, dst: str, proto: str, dport: int, established: bool) -> bool:
        i = 0
        while i < len(rule) and rule[i] not in ("-j", "-g"):
            opt = rule[i]
            if opt == "-s":
                if ipaddress.ip_address(src) not in ipaddress.ip_network(rule[i + 1]):
                    return False
                i += 2
            elif opt == "-d":
                if ipaddress.ip_address(dst) not in ipaddress.ip_network(rule[i + 1]):
                    return False
                i += 2
            elif opt == "-p":
                if rule[i + 1] != proto:
                    return False
                i += 2
            elif opt == "--dport":
                lo, _, hi = rule[i + 1].partition(":")
                if not int(lo) <= dport <= int(hi or lo):
                    return False
                i += 2
            elif opt == "-m" and rule[i + 1] == "conntrack":
                if not established:
                    return False
                i += 4
            elif opt == "-m" and rule[i + 1] == "limit":
                i += 6  # -m limit --limit R --limit-burst B: the fake never rate-limits
            elif opt == "-m" and rule[i + 1] == "set":
                name, where = rule[i + 3], rule[i + 4]
                if not self._in_set(name, src if where == "src" else dst):
                    return False
                i += 5
            else:
                raise AssertionError(f"fake kernel cannot evaluate {opt!r} in {rule}")
        return True

    def walk(self, chain: str, src: str, dst: str, proto: str, dport: int, established: bool = False) -> str:
        """The verdict of ``chain`` for one packet: 'DROP', 'ACCEPT' or 'RETURN' (fell through)."""
        for n, text in enumerate(self.chains[chain]):
            rule = self._parsed.get(text)
            if rule is None:
                rule = self._parsed[text] = shlex.split(text)
            if not self._match(rule, src, dst, proto, dport, established):
                continue
            self.hits[(chain, n)] = self.hits.get((chain, n), 0) + 1
            if "-g" in rule:  # goto: the target's verdict is this chain's, RETURN included
                return self.walk(rule[rule.index("-g") + 1], src, dst, proto, dport, established)
            target = rule[rule.index("-j") + 1]
            if target in ("LOG", "NFLOG"):
                self.logged.append((chain, src, dst, proto, dport))
                continue
            if target in ("DROP", "ACCEPT"):
                return target
            if target == "RETURN":
                return "RETURN"
            sub = self.walk(target, src, dst, proto, dport, established)
            if sub != "RETURN":
                return sub
        return "RETURN"

    def forward(self, src: str, dst: str, proto: str, dport: int, established: bool = False) -> bool:
        """Whether a forwarded packet gets past FORWARD (policy '-j DROP' is the only denial here)."""
        return self.walk("FORWARD", src, dst, proto.lower(), dport, established) != "DROP"
