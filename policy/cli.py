"""``podnet-policy``: the NetworkPolicy engine of one node.

    podnet-policy --kubeconfig FILE --node-name NODE [--min-sync-period 100ms]
                  [--ip-family 4|6|dual] [--iptables-mode auto|legacy|nft]
                  [--metrics-bind-address 127.0.0.1:9968] [--log-denied] [--once] [--cleanup]

The binaries' one CLI shape: flags -> :func:`options_from` -> a frozen :class:`Options` ->
:func:`run`. ``--node-name`` names the node (``--hostname-override``, kube-proxy's name, is an
alias; default ``$NODE_NAME``, else the hostname); durations take Kubernetes' notation or a bare
number of seconds (:func:`podnet.kube.durations.duration_flag`); ``-v``, ``--logging-format``
and ``--version`` are :mod:`podnet.kube.logsetup`'s. The API server is found as every podnet
binary finds it (``ApiClient.from_flags``: --kubeconfig/--master, $KUBECONFIG, ~/.kube/config,
in-cluster). A configuration error is one line and exit status 2 before anything on the node
changes; SIGTERM stops the engine and leaves the rules in force (pods stay protected across a
restart); ``--cleanup`` removes every policy chain, jump and set and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from podnet.host.addr import listen_address
from podnet.host.loop import stop_on_signals
from podnet.host.serving import HttpEndpoint
from podnet.kube import logsetup
from podnet.kube.durations import duration_flag, parse_flag_duration
from podnet.kube.errors import ConfigError
from podnet.policy.engine import Engine, admin_informers, real_informers
from podnet.policy.kernel import KernelRunner
from podnet.policy.nodes import node_informer
from podnet.policy.programmer import Programmer, cleanup

__all__ = ["main", "parser", "parse_duration", "Options", "options_from", "run"]

log = logging.getLogger("podnet.policy")

parse_duration = parse_flag_duration
"""Seconds from a duration flag's text (``100ms``, ``1m30s``, ``2``)."""


@dataclass(frozen=True)
class Options:
    """Everything ``podnet-policy`` runs with, from its flags."""

    node: str
    kubeconfig: str | None = None
    master: str | None = None
    min_sync_period: float = 0.1
    full_sync_period: float = 300.0
    ip_family: str = "4"
    iptables_mode: str = "auto"
    metrics_bind_address: str = "127.0.0.1:9968"
    """HOST:PORT of /metrics, /healthz and /livez; '' disables."""
    log_denied: bool = False
    cni_socket: str = ""
    once: bool = False
    cleanup: bool = False


def _hostport(text: str) -> str:
    if text:
        try:
            listen_address(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"invalid address {text!r}: want HOST:PORT or '' ({e})") from None
    return text


def parser() -> argparse.ArgumentParser:
    p = logsetup.OneLineParser(prog="podnet-policy", description="NetworkPolicy enforcement for one node")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--master", default=None)
    p.add_argument("--node-name", "--hostname-override", dest="node", default=None,
                   help="this node's name (default: $NODE_NAME, else the hostname); --hostname-override is kube-proxy's "
                        "name for it")
    p.add_argument("--min-sync-period", type=duration_flag, default=0.1, help="e.g. 100ms, 1s (default 100ms)")
    p.add_argument("--full-sync-period", type=duration_flag, default=300.0, help="e.g. 5m (default 5m)")
    p.add_argument("--ip-family", choices=("4", "6", "dual"), default="4")
    p.add_argument("--iptables-mode", choices=("auto", "legacy", "nft"), default="auto")
    p.add_argument("--metrics-bind-address", type=_hostport, default="127.0.0.1:9968")
    p.add_argument("--log-denied", action="store_true",
                   help="one log line per denied connection (pod, direction, 5-tuple), read from NFLOG group "
                        "6874; at most 10 lines/s")
    p.add_argument("--cni-socket", default="", metavar="PATH",
                   help="serve the CNI handshake here (the CNI daemon's --policy-socket): a new pod's rules are in "
                        "the kernel before its ADD returns; '' disables")
    p.add_argument("--once", action="store_true", help="sync once after the informers have synced, then exit")
    p.add_argument("--cleanup", action="store_true", help="remove every policy chain and set, then exit")
    logsetup.add_flags(p, "policy")
    return p


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        node=args.node or os.environ.get("NODE_NAME") or socket.gethostname(), kubeconfig=args.kubeconfig,
        master=args.master, min_sync_period=args.min_sync_period, full_sync_period=args.full_sync_period,
        ip_family=args.ip_family, iptables_mode=args.iptables_mode, metrics_bind_address=args.metrics_bind_address,
        log_denied=args.log_denied, cni_socket=args.cni_socket, once=args.once, cleanup=args.cleanup,
    )


async def _kernels(opts: Options, prefix: Sequence[str] = ()) -> list[KernelRunner]:
    mode = opts.iptables_mode
    if mode == "auto":
        from podnet.host.xtables import detect_mode

        mode = await detect_mode(prefix)
    families = (4, 6) if opts.ip_family == "dual" else (int(opts.ip_family),)
    return [KernelRunner(f, mode, prefix) for f in families]


async def _serve_metrics(addr: str, engine: Engine) -> HttpEndpoint | None:
    if not addr:
        return None

    async def metrics(_r: web.Request) -> web.Response:
        try:
            await engine.collect_denied()
        except Exception as e:  # noqa: BLE001 - a scrape never fails because of the counters
            log.warning("reading denied-packet counters failed: %s", e)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_r: web.Request) -> web.Response:
        ok = engine.syncs > 0 and engine.last_error is None
        return web.json_response({"synced": engine.syncs > 0, "lastError": engine.last_error}, status=200 if ok else 503)

    async def livez(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    endpoint = HttpEndpoint({"/metrics": metrics, "/healthz": healthz, "/livez": livez})
    host, port = listen_address(addr)
    await endpoint.start(host, port)
    return endpoint


def _start_denied_log(engine: Engine):
    """The NFLOG reader writing denied-connection lines, or None (one warning) when the kernel
    refuses the group: the rules and the denied-packet counters work without it."""
    from podnet.policy.nflog import DeniedLog, NflogReader, describe_chain

    def describe(chain: str) -> str:
        for prog in engine.programmers:
            if chain in prog.chain_pods:
                return describe_chain(chain, prog.chain_pods)
        return chain

    reader = NflogReader(DeniedLog(describe=describe).add)
    try:
        reader.start()
    except OSError as e:
        log.warning("--log-denied: cannot read NFLOG group %d (%s): denied packets are counted, not logged",
                    reader.group, e)
        return None
    return reader


async def _run(opts: Options) -> int:
    kernels = await _kernels(opts)
    if opts.cleanup:
        removed = sum([await cleanup(k) for k in kernels])
        log.info("removed %d policy chains and sets", removed)
        return 0
    from podnet.kube.client import ApiClient

    async with ApiClient.from_flags(opts.master, opts.kubeconfig, user_agent="podnet-policy/0.1") as client:
        engine = Engine([Programmer(k, opts.log_denied) for k in kernels], opts.node,
                        min_sync_period=opts.min_sync_period, full_sync_period=opts.full_sync_period)
        admin = await admin_informers(client)
        engine.attach(*real_informers(client), *admin, nodes=node_informer(client) if admin else None)
        stop = stop_on_signals()
        if opts.once:
            async def once() -> None:
                while not engine.synced:
                    await asyncio.sleep(0.05)
                await engine.sync()
                stop.set()
            task = asyncio.create_task(once())
            await engine.run(stop)
            await task
            return 0 if engine.syncs else 1
        endpoint = await _serve_metrics(opts.metrics_bind_address, engine)
        denied_reader = _start_denied_log(engine) if opts.log_denied else None
        handshake = None
        if opts.cni_socket:
            from podnet.policy.handshake import HandshakeServer, api_fetcher

            handshake = HandshakeServer(engine, opts.cni_socket, api_fetcher(client))
            await handshake.start()
        try:
            log.info("podnet-policy on node %s: IPv%s", opts.node, opts.ip_family)
            await engine.run(stop)
        finally:
            if denied_reader is not None:
                denied_reader.close()
            if handshake is not None:
                await handshake.close()
            if endpoint is not None:
                await endpoint.close()
    return 0


def run(opts: Options) -> int:
    """Run the engine with ``opts`` until SIGTERM/SIGINT (or one sync with ``once``); the exit status."""
    if os.geteuid() != 0:
        return logsetup.config_error("policy", "podnet-policy programs iptables and ipsets: run it as root")
    try:
        return asyncio.run(_run(opts))
    except KeyboardInterrupt:
        return 0
    except ConfigError as e:
        return logsetup.config_error("policy", e)
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        log.error("podnet-policy failed: %s", e)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logsetup.setup_from_args(args)
    return run(options_from(args))
