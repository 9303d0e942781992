"""``podnet-policy``: the NetworkPolicy engine of one node.

    podnet-policy --kubeconfig FILE --hostname-override NODE [--min-sync-period 100ms]
                  [--ip-family 4|6|dual] [--iptables-mode auto|legacy|nft]
                  [--metrics-bind-address 127.0.0.1:9968] [--log-denied] [--once] [--cleanup]

The API server is found as every podnet binary finds it (``ApiClient.from_flags``:
--kubeconfig/--master, $KUBECONFIG, ~/.kube/config, in-cluster). A configuration
error is one line and exit status 2 before anything on the node changes; SIGTERM
stops the engine and leaves the rules in force (pods stay protected across a
restart); ``--cleanup`` removes every policy chain, jump and set and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
from typing import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from podnet.kube import logsetup
from podnet.policy.engine import Engine, real_informers
from podnet.policy.kernel import KernelRunner
from podnet.policy.programmer import Programmer, cleanup

__all__ = ["main", "parser", "parse_duration"]

log = logging.getLogger("podnet.policy")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")


def parse_duration(text: str) -> float:
    """A Go-style duration of ms, s or m units (``100ms``, ``1.5s``, ``1m30s``), in seconds."""
    if not text or not re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m))+", text):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 100ms, 1s, 1m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}
    return sum(float(n) * scale[u] for n, u in _DURATION.findall(text))


def _hostport(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if text and (not sep or not port.isdigit() or not 0 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: want HOST:PORT or ''")
    return text


def parser() -> argparse.ArgumentParser:
    p = logsetup.OneLineParser(prog="podnet-policy", description="NetworkPolicy enforcement for one node")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--master", default=None)
    p.add_argument("--hostname-override", "--node-name", dest="node", default=None,
                   help="this node's name (default: $NODE_NAME, else the hostname)")
    p.add_argument("--min-sync-period", type=parse_duration, default=0.1)
    p.add_argument("--full-sync-period", type=parse_duration, default=300.0)
    p.add_argument("--ip-family", choices=("4", "6", "dual"), default="4")
    p.add_argument("--iptables-mode", choices=("auto", "legacy", "nft"), default="auto")
    p.add_argument("--metrics-bind-address", type=_hostport, default="127.0.0.1:9968")
    p.add_argument("--log-denied", action="store_true",
                   help="a kernel LOG line (prefix: the pod's chain) per denied new connection, at most 10/s per pod")
    p.add_argument("--cni-socket", default="", metavar="PATH",
                   help="serve the CNI handshake here (the CNI daemon's --policy-socket): a new pod's rules are in "
                        "the kernel before its ADD returns; '' disables")
    p.add_argument("--once", action="store_true", help="sync once after the informers have synced, then exit")
    p.add_argument("--cleanup", action="store_true", help="remove every policy chain and set, then exit")
    logsetup.add_flags(p, "policy")
    return p


async def _kernels(args: argparse.Namespace, prefix: Sequence[str] = ()) -> list[KernelRunner]:
    mode = args.iptables_mode
    if mode == "auto":
        from podnet.proxy.iptables import detect_mode

        mode = await detect_mode(prefix)
    families = (4, 6) if args.ip_family == "dual" else (int(args.ip_family),)
    return [KernelRunner(f, mode, prefix) for f in families]


async def _serve_metrics(addr: str, engine: Engine) -> web.AppRunner | None:
    if not addr:
        return None
    app = web.Application()

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

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = addr.rpartition(":")
    await web.TCPSite(runner, host.strip("[]") or None, int(port), reuse_address=True).start()
    return runner


async def _run(args: argparse.Namespace) -> int:
    kernels = await _kernels(args)
    if args.cleanup:
        removed = sum([await cleanup(k) for k in kernels])
        log.info("removed %d policy chains and sets", removed)
        return 0
    from podnet.kube.client import ApiClient

    node = args.node or os.environ.get("NODE_NAME") or socket.gethostname()
    async with ApiClient.from_flags(args.master, args.kubeconfig, user_agent="podnet-policy/0.1") as client:
        engine = Engine([Programmer(k, args.log_denied) for k in kernels], node, min_sync_period=args.min_sync_period,
                        full_sync_period=args.full_sync_period)
        engine.attach(*real_informers(client))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.once:
            async def once() -> None:
                while not engine.synced:
                    await asyncio.sleep(0.05)
                await engine.sync()
                stop.set()
            task = asyncio.create_task(once())
            await engine.run(stop)
            await task
            return 0 if engine.syncs else 1
        runner = await _serve_metrics(args.metrics_bind_address, engine)
        handshake = None
        if args.cni_socket:
            from podnet.policy.handshake import HandshakeServer, api_fetcher

            handshake = HandshakeServer(engine, args.cni_socket, api_fetcher(client))
            await handshake.start()
        try:
            log.info("podnet-policy on node %s: IPv%s", node, args.ip_family)
            await engine.run(stop)
        finally:
            if handshake is not None:
                await handshake.close()
            if runner is not None:
                await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logsetup.setup_from_args(args)
    if os.geteuid() != 0:
        return logsetup.config_error("policy", "podnet-policy programs iptables and ipsets: run it as root")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        from podnet.kube.kubeconfig import ConfigError

        if isinstance(e, ConfigError):
            return logsetup.config_error("policy", e)
        log.error("podnet-policy failed: %s", e)
        return 1
