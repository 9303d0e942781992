"""The lab API server: a kube-apiserver (plus its controllers) in one asyncio process.

``podnet lab apiserver --listen 127.0.0.1:6443 [--state FILE]`` serves core v1
services, nodes, namespaces, pods (with pods/log) and discovery.k8s.io/v1 endpointslices
over plain HTTP, or HTTPS with ``--tls-cert-file``/``--tls-private-key-file``; with
``--token-auth-file`` every request but /healthz, /livez, /readyz and /version needs a
bearer token (:mod:`podnet.netlab.apiserver.authn`) or a service-account token issued by the
TokenRequest API (:mod:`podnet.netlab.apiserver.tokens`); adding ``--authorization-mode RBAC
[--rbac-file FILE]`` authorises each authenticated request with the Node authorizer
(:mod:`podnet.netlab.apiserver.nodeauthz`) and RBAC over the stored Role, ClusterRole, RoleBinding
and ClusterRoleBinding objects (:mod:`podnet.netlab.apiserver.rbacstore`; FILE's documents and the
bootstrap roles are created at start), else 403, and admits every write through NodeRestriction
and RBAC escalation prevention (:mod:`podnet.netlab.apiserver.admission`); every allowed request is
counted against the RBAC rule that allowed it, and ``GET /debug/podnet/rbac-usage`` (RBAC: only the
admin's ``*``) reports granted-but-never-used permissions (:mod:`podnet.netlab.apiserver.rbacusage`). Server-side apply
(:mod:`podnet.netlab.apiserver.apply`) and OpenAPI v3 (:mod:`podnet.netlab.apiserver.openapi`)
are always served. It speaks the real REST wire protocol (see
:mod:`podnet.netlab.apiserver.apihandlers`), so podnet's daemons, kubectl and tests talk
to it exactly as to a real cluster. Built-in controllers: ClusterIP and
NodePort allocation (at write time, as the apiserver registry does), node pod
CIDRs, EndpointSlices, v1 Endpoints, and the ReplicaSet, Deployment and DaemonSet controllers
with garbage collection of their dependents (post-commit, as kube-controller-manager does).

For tests and the lab, :class:`LabApiServer` is an async context manager::

    async with LabApiServer(history=50) as api:
        client = ApiClient.from_url(api.url)

It listens on any number of addresses at once, including listening sockets
created elsewhere (for instance inside a network namespace):
``await api.start(["127.0.0.1:0"], sockets=[sock])``. With ``state_path``
the store is loaded at start and written (atomically, debounced) after
changes and at stop, so a restart loses nothing; watchers resuming across a
restart get 410 and relist.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Sequence

from aiohttp import web

from podnet.host.addr import join_hostport, listen_address
from podnet.host.loop import stop_on_signals
from podnet.netlab.apiserver.allocators import CIDRAllocator
from podnet.netlab.apiserver.appcontrollers import WorkloadControllers
from podnet.netlab.apiserver.apihandlers import ApiHandlers
from podnet.netlab.apiserver.apistore import Persister, Store, StatusError
from podnet.netlab.apiserver.admission import Admission
from podnet.netlab.apiserver.apply import serve_apply
from podnet.netlab.apiserver.authn import TokenAuthenticator, UnionAuthenticator
from podnet.netlab.apiserver.authz import Policy, Union, policy_from_yaml
from podnet.netlab.apiserver.nodeauthz import NodeAuthorizer
from podnet.netlab.apiserver.rbacstore import StorePolicy
from podnet.netlab.apiserver.rbacusage import RbacUsage
from podnet.netlab.apiserver.rbacstore import seed as rbac_seed
from podnet.netlab.apiserver.tokens import ServiceAccountTokens
from podnet.netlab.apiserver.controllers import EndpointSliceController, NodeCIDRController
from podnet.netlab.apiserver.podlogs import PodLogs
from podnet.netlab.apiserver.podexec import PodExec
from podnet.netlab.apiserver.portforward import PortForward
from podnet.netlab.apiserver.containertargets import KubeletRecords
from podnet.netlab.apiserver.registry import Registry, finish_graceful_delete
from podnet.netlab.apiserver.scheduler import PodScheduler
from podnet.netlab.apiserver.serviceaccounts import ServiceAccountController

__all__ = ["LabApiServer", "add_arguments", "run", "parse_listen"]

log = logging.getLogger("podnet.netlab.apiserver.server")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def parse_listen(addr: str) -> tuple[str, int]:
    """'127.0.0.1:6443', '[::1]:6443' or ':6443' -> (host, port) (:func:`podnet.host.addr.listen_address`)."""
    return listen_address(addr)


class LabApiServer:
    def __init__(
        self,
        *,
        state_path: str | Path | None = None,
        history: int = 10_000,
        bookmark_interval: float = 60.0,
        service_cidr: str = "10.96.0.0/12",
        service_cidr_v6: str | None = None,
        cluster_cidr: str = "10.244.0.0/16",
        node_cidr_mask: int = 24,
        node_port_range: tuple[int, int] = (30000, 32767),
        controllers: bool = True,
        kubernetes_service: str | None = None,
        max_endpoints_per_slice: int = 100,
        persist_delay: float = 0.05,
        pod_log_dir: str | Path | None = None,
        authenticator: TokenAuthenticator | None = None,
        tls: tuple[str | Path, str | Path] | None = None,
        policy: Policy | None = None,
        service_account_key: bytes | None = None,
        root_ca: str | None = None,
    ) -> None:
        """``tls``: (certificate, private key) files to serve HTTPS with on every listener.
        ``policy``: turns on authorisation (needs ``authenticator``): its documents and the built-in roles
        are seeded into the store, and every request is then authorised by the Node authorizer and RBAC
        over the store's RBAC objects (so RBAC objects written through the API take effect), and every
        write passes NodeRestriction and RBAC escalation prevention.
        ``service_account_key``: the key TokenRequest tokens are signed with (random if None).
        ``root_ca``: the CA (PEM) published as every namespace's ``kube-root-ca.crt`` ConfigMap; with it, Pods
        get the ``kube-api-access-*`` volume at create (:mod:`.serviceaccounts`)."""
        if policy is not None and authenticator is None:
            raise ValueError("RBAC authorisation needs an authenticator (--token-auth-file)")
        self.store = Store(history=history)
        cidrs = [service_cidr] + ([service_cidr_v6] if service_cidr_v6 else [])
        self.registry = Registry(self.store, service_cidrs=cidrs, node_ports=node_port_range)
        self.handlers = ApiHandlers(self.store, self.registry, bookmark_interval=bookmark_interval)
        self.handlers.pod_logs = PodLogs(self.store, pod_log_dir)
        if pod_log_dir:  # the lab's run directory holds logs/pods and the kubelets' records
            records = KubeletRecords(Path(pod_log_dir).parent.parent)
            self.handlers.pod_exec = PodExec(records)
            self.handlers.pod_port_forward = PortForward(records)
        self.tokens = ServiceAccountTokens(self.store, service_account_key)
        self.handlers.token_requests = self.tokens
        self.handlers.apply = serve_apply
        self.handlers.authenticator = UnionAuthenticator(authenticator, self.tokens) if authenticator else None
        self._seed_documents = policy.documents if policy is not None else None
        if policy is not None:
            self.rbac = StorePolicy(self.store)
            self.handlers.policy = Union(NodeAuthorizer(self.store), self.rbac)
            self.handlers.admission = Admission(self.store, self.handlers.policy, self.rbac)
            self.handlers.rbac_usage = RbacUsage(self.rbac)
        self.persister = Persister(self.store, state_path, persist_delay) if state_path else None
        self.node_cidrs = NodeCIDRController(self.store, CIDRAllocator(cluster_cidr, node_cidr_mask))
        self.endpoint_slices = EndpointSliceController(self.store, max_endpoints_per_slice)
        self.scheduler = PodScheduler(self.store)
        self.workloads = WorkloadControllers(self.store)
        self.service_accounts = ServiceAccountController(self.store, root_ca)
        self.registry.token_volumes = root_ca is not None
        self.workloads.pod_admission = self.registry.admit_pod
        self.scheduler.record = self.workloads.record
        self._controllers = controllers
        self._kubernetes_service = kubernetes_service
        self._runner: web.AppRunner | None = None
        self._tls = tls
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        """The first listening address as an http (https with ``tls``) URL."""
        if not self.urls:
            raise RuntimeError("LabApiServer is not started")
        return self.urls[0]

    def _boot_store(self) -> None:
        if self.persister is not None:
            self.persister.load()
        for ns in DEFAULT_NAMESPACES:
            if self.store.get("namespaces", "", ns) is None:
                kind = self.registry_kind("namespaces")
                self.registry.commit_create(kind, self.registry.prepare_create(kind, {"metadata": {"name": ns}}, None))
        self.registry.reserve_existing()
        if self._seed_documents is not None:
            rbac_seed(self.registry, self._seed_documents)
        if self._controllers:
            self.service_accounts.resync()
            self.store.hooks.append(self.service_accounts.hook)
            self.node_cidrs.resync()
            self.endpoint_slices.resync()
            self.scheduler.resync()
            self.workloads.resync()
            self.store.hooks += [self.node_cidrs.hook, self.scheduler.hook, self.endpoint_slices.hook,
                                 self.workloads.hook]
        if self.persister is not None:
            self.store.on_change = self.persister.mark
        self._resume_graceful_deletes()

    def _resume_graceful_deletes(self) -> None:
        """Pods that were terminating when the server stopped finish their grace period now."""
        kind = self.registry_kind("pods")
        loop = asyncio.get_running_loop()
        for pod in list(self.store.items("pods")):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds"):
                loop.call_later(float(meta["deletionGracePeriodSeconds"]), finish_graceful_delete, self.registry,
                                kind, meta["namespace"], meta["name"], meta.get("uid", ""))

    @staticmethod
    def registry_kind(plural: str):
        from podnet.netlab.apiserver.apikinds import KINDS

        return KINDS[plural]

    async def start(self, listen: Sequence[str] = ("127.0.0.1:0",), sockets: Sequence[socket.socket] = ()) -> "LabApiServer":
        self._boot_store()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handlers.dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        ssl_ctx = None
        if self._tls is not None:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
        scheme = "https" if ssl_ctx else "http"
        sites: list[web.BaseSite] = []
        for addr in listen:
            host, port = parse_listen(addr)
            sites.append(web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_ctx))
        sites += [web.SockSite(self._runner, s, ssl_context=ssl_ctx) for s in sockets]
        for site in sites:
            await site.start()
        self.urls = [f"{scheme}://{join_hostport(*addr[:2])}" for addr in self._runner.addresses]
        log.info("lab API server listening on %s", ", ".join(self.urls))
        if self._kubernetes_service:
            self._ensure_kubernetes_service(self._kubernetes_service)
        return self

    def _ensure_kubernetes_service(self, advertise: str) -> None:
        """The ``default/kubernetes`` Service (first IP of the range, port 443) and its EndpointSlice.

        As kube-apiserver does, so in-cluster clients (KUBERNETES_SERVICE_HOST) reach this server
        at ``advertise`` (HOST:PORT) through the service proxy.
        """
        import ipaddress

        from podnet.netlab.apiserver.apikinds import KINDS

        host, port = parse_listen(advertise)
        family = "IPv6" if ipaddress.ip_address(host).version == 6 else "IPv4"
        first = next(iter(self.registry.services.ip_allocators.values())).network
        svc = {"metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"clusterIP": str(first.network_address + 1),
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}
        if self.store.get("services", "default", "kubernetes") is None:
            self.registry.commit_create(KINDS["services"], self.registry.prepare_create(KINDS["services"], svc, "default"))
        slice_ = {"metadata": {"name": "kubernetes", "namespace": "default",
                               "labels": {"kubernetes.io/service-name": "kubernetes"}},
                  "addressType": family, "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
                  "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
        kind = KINDS["endpointslices"]
        old = self.store.get("endpointslices", "default", "kubernetes")
        if old is None:
            self.registry.commit_create(kind, self.registry.prepare_create(kind, slice_, "default"))
        else:
            self.registry.commit_update(kind, old, self.registry.prepare_update(kind, old, slice_), None)

    async def stop(self) -> None:
        self.handlers.close_watchers()
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.persister is not None:
            self.persister.flush()
        self.store.hooks.clear()

    async def __aenter__(self) -> "LabApiServer":
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", action="append", default=None, metavar="HOST:PORT",
                   help="address to serve on (repeatable; default 127.0.0.1:6443)")
    p.add_argument("--state", metavar="FILE", help="persist objects to FILE (JSON, atomic writes)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12",
                   help="CIDR for ClusterIPs; 'V4CIDR,V6CIDR' for dual-stack")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="CIDR node pod CIDRs are carved from")
    p.add_argument("--node-cidr-mask-size", type=int, default=24)
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--watch-history", type=int, default=10_000, help="events kept for watch resumption")
    p.add_argument("--bookmark-interval", type=float, default=60.0, help="seconds between BOOKMARKs on idle watches")
    p.add_argument("--no-controllers", action="store_true",
                   help="no controllers: node pod CIDRs, EndpointSlices, Endpoints, scheduler, Deployments, "
                        "ReplicaSets, DaemonSets (Service IP/port allocation stays)")
    p.add_argument("--token-auth-file", metavar="FILE",
                   help="kube-apiserver's static token file (token,user,uid[,\"groups\"]): refuse requests without "
                        "one of its tokens with 401 (only /healthz, /livez, /readyz, /version stay public); "
                        "without it every request is served")
    p.add_argument("--authorization-mode", choices=("AlwaysAllow", "RBAC", "Node,RBAC"), default="AlwaysAllow",
                   help="RBAC (or Node,RBAC, the same): authorise every authenticated request with the Node "
                        "authorizer and RBAC over the stored Role/ClusterRole/(Cluster)RoleBinding objects, seeded "
                        "with the built-in roles and --rbac-file's documents (needs --token-auth-file); "
                        "AlwaysAllow (default): any authenticated client may do anything")
    p.add_argument("--rbac-file", metavar="FILE",
                   help="YAML manifest whose Role/ClusterRole/RoleBinding/ClusterRoleBinding documents are "
                        "created at start (other kinds are skipped), e.g. deploy/podnet.yaml")
    p.add_argument("--service-account-signing-key-file", metavar="FILE",
                   help="the key TokenRequest tokens are signed with (HMAC-SHA256; any bytes, at least 32); "
                        "default: a random key, so tokens do not survive a restart")
    p.add_argument("--tls-cert-file", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-private-key-file", metavar="FILE", help="the private key of --tls-cert-file (PEM)")
    p.add_argument("--root-ca-file", metavar="FILE",
                   help="publish this CA (PEM) as every namespace's kube-root-ca.crt ConfigMap, and give Pods the "
                        "kube-api-access-* projected volume at create (as kube-controller-manager's "
                        "--root-ca-file and the ServiceAccount admission plugin do)")
    p.add_argument("--pod-log-dir", metavar="DIR",
                   help="serve pods/log from kubelet's /var/log/pods layout under DIR (a lab's <run dir>/logs/pods), "
                        "and pods/exec and pods/portforward into the containers the lab kubelets of that run dir launched")
    p.add_argument("--kubernetes-service", metavar="IP:PORT",
                   help="create the default/kubernetes Service pointing at this address (as kube-apiserver does)")


def server_from_args(args: argparse.Namespace) -> LabApiServer:
    cidrs = args.service_cluster_ip_range.split(",")
    lo, _, hi = args.service_node_port_range.partition("-")
    return LabApiServer(
        state_path=args.state,
        history=args.watch_history,
        bookmark_interval=args.bookmark_interval,
        service_cidr=cidrs[0],
        service_cidr_v6=cidrs[1] if len(cidrs) > 1 else None,
        cluster_cidr=args.cluster_cidr,
        node_cidr_mask=args.node_cidr_mask_size,
        node_port_range=(int(lo), int(hi or lo)),
        controllers=not args.no_controllers,
        kubernetes_service=args.kubernetes_service,
        pod_log_dir=args.pod_log_dir,
        authenticator=TokenAuthenticator.from_file(args.token_auth_file) if args.token_auth_file else None,
        tls=_tls_files(args.tls_cert_file, args.tls_private_key_file),
        policy=rbac_policy(args.authorization_mode, args.rbac_file),
        service_account_key=_signing_key(args.service_account_signing_key_file),
        root_ca=Path(args.root_ca_file).read_text() if args.root_ca_file else None,
    )


def _signing_key(path: str | None) -> bytes | None:
    if not path:
        return None
    key = Path(path).read_bytes()
    if len(key) < 32:
        raise ValueError(f"{path}: a signing key needs at least 32 bytes")
    return key


def rbac_policy(mode: str, rbac_file: str | None) -> Policy | None:
    """The policy ``--authorization-mode``/``--rbac-file`` ask for; ValueError for a mismatch."""
    if mode not in ("RBAC", "Node,RBAC"):
        if rbac_file:
            raise ValueError("--rbac-file needs --authorization-mode RBAC")
        return None
    return policy_from_yaml(Path(rbac_file).read_text() if rbac_file else "")


def _tls_files(cert: str | None, key: str | None) -> tuple[str, str] | None:
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert-file and --tls-private-key-file go together")
    return (cert, key) if cert and key else None


async def _serve(args: argparse.Namespace) -> None:
    server = server_from_args(args)
    await server.start(args.listen or ["127.0.0.1:6443"])
    print(f"podnet lab apiserver: serving on {' '.join(server.urls)}", flush=True)
    if server.handlers.authenticator is None:
        log.warning("no --token-auth-file: every client that reaches %s is served, unauthenticated",
                    " ".join(server.urls))
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve(args))
    except (ValueError, OSError, StatusError) as e:
        log.error("%s", e)
        return 1
    return 0
