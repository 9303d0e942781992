"""The CNI handshake: a new pod's policy state is in the kernel before its interface exists.

Why: the engine learns a pod's address from the Pod's ``status.podIPs``, which
kubelet writes only after the runtime's CNI ADD has returned and the sandbox is
up; until the engine's next sync after that, an isolated pod would be open.
Calico closes this window by having Felix program a workload endpoint's chains
before its interface passes traffic (an interface without programmed chains is
dropped, "endpoint not ready"); Cilium's CNI plugin waits until the agent has
created the endpoint and regenerated its policy before ADD returns; Antrea's
agent installs the pod's flows, policy included, within its own CNI ADD. podnet
does the equivalent across two processes: the engine already has the Pod object
(labels, node, ports) from its informer before the sandbox exists; only the
address is missing, and the CNI daemon has it first.

Protocol (one unix-socket connection per request; one JSON line each way, at
most :data:`MAX_LINE` bytes):

- request ``{"op": "add" | "del", "namespace": NS, "name": NAME, "ips": [IP, ...]}``;
  namespace a DNS-1123 label, name a DNS-1123 subdomain, 1..:data:`MAX_IPS` addresses
  parsed as Go's ``net.ParseIP`` (no zones, no leading zeros), written canonically;
- reply ``{"status": "ok" | "unknown" | "error", "message": TEXT}``.

``add`` (sent by the CNI daemon after IPAM and *before* the veth and its host
route exist; rules match on the pod's address, so they can precede it): the
engine records the addresses for that pod, recomputes and applies, and answers
``ok`` once every address family has the pod's isolation and its address in
every peer set it belongs to: when its own chains are not in the kernel yet, its
address first goes into the pending sets (new connections to it, or from it, are
dropped in each direction a policy judges; a netlink write, no exec), the answer
is sent, and the ``iptables-restore`` writing its chains and allow rules follows in
the same sync, after which the pending entries are removed. A pod therefore
starts isolated and is never open; its allowed peers reach it a few milliseconds
after the answer (if that restore fails, it stays isolated until a later sync
writes its chains). A pod the informer does not hold yet is fetched from the API
once (when a fetcher is configured); still unknown: ``unknown``, and the CNI
decides (fail-closed: retry later; otherwise proceed). Not synced yet, or the
kernel refused: ``error``. Concurrent ADDs share syncs: one sync that starts
after an announcement covers every announcement made before it.

``del`` (best effort, after the veth is gone): the addresses are withdrawn from
that pod in the engine's view and a sync starts at once (out of peer sets, its
chains dropped, so a reused address inherits nothing); the answer does not wait
for it.

Recorded addresses override what the informer shows for that pod until the
informer agrees (then the record is dropped) or a ``del`` withdraws them; a
withdrawn address stays withdrawn until the informer shows the pod with other
addresses only (a status update that still carries the old address may arrive
after the ``del``), or no longer shows the pod.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from podnet.kube import goip, validate
from podnet.kube.netpol import PolicyPod

__all__ = ["Request", "Reply", "Announcements", "HandshakeServer", "parse_request", "encode_request",
           "MAX_LINE", "MAX_IPS", "BadRequest", "api_fetcher"]

log = logging.getLogger("podnet.policy.handshake")

MAX_LINE = 4096
MAX_IPS = 8
OK, UNKNOWN, ERROR = "ok", "unknown", "error"

Fetcher = Callable[[str, str], Awaitable["PolicyPod | None"]]


class BadRequest(ValueError):
    """A request line that is not the protocol."""


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    namespace: str
    name: str
    ips: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Reply:
    status: str
    message: str = ""

    def encode(self) -> bytes:
        return json.dumps({"status": self.status, "message": self.message}).encode() + b"\n"


def _canonical_ip(value: object) -> str:
    try:
        return str(goip.parse_ip(value))  # type: ignore[arg-type]
    except goip.IPError as e:
        raise BadRequest(f"ips: {value!r}: {e}") from None


def parse_request(line: bytes) -> Request:
    if len(line) > MAX_LINE:
        raise BadRequest(f"request longer than {MAX_LINE} bytes")
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"not JSON: {e}") from None
    if not isinstance(raw, dict) or set(raw) != {"op", "namespace", "name", "ips"}:
        raise BadRequest("want exactly the keys op, namespace, name, ips")
    if raw["op"] not in ("add", "del"):
        raise BadRequest(f"op: {raw['op']!r} is not add or del")
    try:
        ns = validate.dns_label("namespace", raw["namespace"])
        name = validate.dns_subdomain("name", raw["name"])
    except validate.InvalidField as e:
        raise BadRequest(str(e)) from None
    ips = raw["ips"]
    if not isinstance(ips, list) or not 1 <= len(ips) <= MAX_IPS:
        raise BadRequest(f"ips: want a list of 1 to {MAX_IPS} addresses")
    canon = tuple(_canonical_ip(ip) for ip in ips)
    if len(set(canon)) != len(canon):
        raise BadRequest("ips: duplicate address")
    return Request(raw["op"], ns, name, canon)


def encode_request(op: str, namespace: str, name: str, ips: Sequence[str]) -> bytes:
    return json.dumps({"op": op, "namespace": namespace, "name": name, "ips": list(ips)}).encode() + b"\n"


class Announcements:
    """What the CNI said about pod addresses, laid over the informer's pods (the engine's ``overlay``)."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.added: dict[str, tuple[str, ...]] = {}
        self.removed: dict[str, frozenset[str]] = {}
        self.fetched: dict[str, PolicyPod] = {}

    def add(self, key: str, ips: tuple[str, ...]) -> None:
        self.added[key] = ips
        gone = self.removed.get(key, frozenset()) - set(ips)
        if gone:
            self.removed[key] = gone
        else:
            self.removed.pop(key, None)

    def remove(self, key: str, ips: tuple[str, ...]) -> None:
        kept = tuple(ip for ip in self.added.get(key, ()) if ip not in ips)
        if kept:
            self.added[key] = kept
        else:
            self.added.pop(key, None)
            self.fetched.pop(key, None)
        self.removed[key] = self.removed.get(key, frozenset()) | set(ips)

    def __call__(self, pods: tuple[PolicyPod, ...]) -> tuple[PolicyPod, ...]:
        """The pods with announced addresses applied; drops records the informer has caught up with."""
        if not (self.added or self.removed or self.fetched):
            return pods
        out: list[PolicyPod] = []
        seen: set[str] = set()
        for p in pods:
            key = p.key
            seen.add(key)
            self.fetched.pop(key, None)
            out.append(self._apply(p))
        for key, p in list(self.fetched.items()):
            if key not in seen and key in self.added:
                out.append(self._apply(p))
        for key in [k for k in self.removed if k not in seen and k not in self.fetched]:
            del self.removed[key]  # the pod is gone: nothing left to withdraw from
        return tuple(out)

    def _apply(self, p: PolicyPod) -> PolicyPod:
        key = p.key
        ips = self.added.get(key)
        if ips is not None:
            if set(p.ips) == set(ips):
                del self.added[key]  # the informer agrees: the record has done its job
            else:
                # the CNI of this node has just placed the pod here: it is a local pod now
                p = dataclasses.replace(p, ips=ips, node_name=self.node_name)
        gone = self.removed.get(key)
        if gone:
            if p.ips and not gone & set(p.ips):
                del self.removed[key]  # the informer shows the pod's next addresses
            else:
                p = dataclasses.replace(p, ips=tuple(ip for ip in p.ips if ip not in gone))
        return p


def api_fetcher(client: Any) -> Fetcher:
    """GET the Pod from the API (a 404 is None), parsed as the informer parses it."""
    from podnet.kube.client import ApiError
    from podnet.kube.netpol import parse_policy_pod
    from podnet.policy.engine import POLICY_PODS

    async def fetch(namespace: str, name: str) -> PolicyPod | None:
        try:
            return parse_policy_pod(await client.get(POLICY_PODS, name, namespace))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    return fetch


class HandshakeServer:
    """Serves the protocol for one :class:`podnet.policy.engine.Engine` (which must have no other overlay)."""

    def __init__(self, engine: Any, path: str, fetch: Fetcher | None = None, fetch_timeout: float = 1.0) -> None:
        self.engine = engine
        self.path = path
        self.fetch = fetch
        self.fetch_timeout = fetch_timeout
        self.announced = Announcements(engine.node_name)
        engine.overlay = self.announced
        self._lock = asyncio.Lock()
        self._gen = 0
        self._done = 0
        self._background: set[asyncio.Task] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self._handle, path=self.path, limit=MAX_LINE + 1)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await reader.readuntil(b"\n")
                reply = await self.answer(parse_request(line))
            except asyncio.LimitOverrunError:
                reply = Reply(ERROR, f"malformed request: longer than {MAX_LINE} bytes")
            except asyncio.IncompleteReadError:
                reply = Reply(ERROR, "malformed request: no newline")
            except BadRequest as e:
                reply = Reply(ERROR, f"malformed request: {e}")
            writer.write(reply.encode())
            await writer.drain()
        except Exception as e:  # noqa: BLE001 - one broken client never stops the server
            log.warning("CNI handshake: %s", e)
        finally:
            writer.close()

    async def answer(self, req: Request) -> Reply:
        if req.op == "del":
            self.announced.remove(req.key, req.ips)
            task = asyncio.create_task(self._sync_covering())  # out of peer sets now, not at the next paced sync
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return Reply(OK)
        if not self.engine.synced:
            return Reply(ERROR, "the policy engine has not synced yet")
        known = self.engine.snapshot_pod(req.key) is not None or req.key in self.announced.fetched
        if not known and self.fetch is not None:
            try:
                pod = await asyncio.wait_for(self.fetch(req.namespace, req.name), self.fetch_timeout)
            except Exception as e:  # noqa: BLE001 - reported as unknown, the CNI decides
                log.warning("fetching pod %s: %s", req.key, e)
                pod = None
            if pod is not None:
                self.announced.fetched[req.key] = pod
                known = True
        if not known:
            return Reply(UNKNOWN, f"pod {req.key} is not known to the policy engine")
        self.announced.add(req.key, req.ips)
        return await self._sync_covering()

    async def _sync_covering(self) -> Reply:
        self._gen += 1
        mine = self._gen
        async with self._lock:
            if self._done >= mine:
                return Reply(OK)
            upto = self._gen
            confirmed = asyncio.get_running_loop().create_future()

            def confirm() -> None:
                if not confirmed.done():
                    confirmed.set_result(True)

            sync = asyncio.ensure_future(self.engine.sync(tuple(self.announced.added), confirm))
            self._background.add(sync)
            sync.add_done_callback(self._background.discard)
            await asyncio.wait({confirmed, sync}, return_when=asyncio.FIRST_COMPLETED)
            if confirmed.done() or sync.result():
                self._done = upto
                return Reply(OK)
            return Reply(ERROR, f"policy sync failed: {self.engine.last_error or 'not synced'}")
