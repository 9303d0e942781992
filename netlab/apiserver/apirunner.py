"""Run the lab API server reachable from two network namespaces at once.

``python -P -m podnet.netlab.apiserver.apirunner --netns UL --underlay-listen IP:PORT --port-file F ...``

The process stays in the root namespace and listens on 127.0.0.1:<ephemeral>
(for kubectl through the lab's kubeconfig), and additionally on a socket
created *inside* the lab's underlay netns (see :func:`podnet.host.nsenter.listening_socket`),
so node namespaces reach it at the underlay address. The root port is written
to ``--port-file`` once both sockets listen, which is ``lab up``'s signal that
the server is ready. Both listeners serve HTTPS only and require a bearer token from ``--token-auth-file``
(401 otherwise); ``--pod-log-dir`` is where the lab's kubelets write container logs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from podnet.netlab.apiserver.authn import TokenAuthenticator
from podnet.netlab.apiserver.authz import policy_from_yaml
from podnet.netlab.apiserver.server import LabApiServer, parse_listen
from podnet.host.loop import stop_on_signals
from podnet.host.nsenter import listening_socket

__all__ = ["main"]


async def _serve(a: argparse.Namespace) -> None:
    host, port = parse_listen(a.underlay_listen)
    ul_sock = listening_socket(a.netns, host, port)
    server = LabApiServer(state_path=a.state, service_cidr=a.service_cidr, cluster_cidr=a.cluster_cidr,
                          node_cidr_mask=a.node_cidr_mask, pod_log_dir=a.pod_log_dir,
                          authenticator=TokenAuthenticator.from_file(a.token_auth_file),
                          tls=(a.tls_cert_file, a.tls_private_key_file),
                          policy=policy_from_yaml(Path(a.rbac_file).read_text()) if a.rbac_file else None,
                          root_ca=_root_ca(a.root_ca_file, a.tls_cert_file))
    await server.start(["127.0.0.1:0"], sockets=[ul_sock])
    root_port = int(server.urls[0].rsplit(":", 1)[1])
    tmp = Path(a.port_file + ".tmp")
    tmp.write_text(f"{root_port}\n")
    tmp.replace(a.port_file)
    logging.getLogger("podnet.lab").info("API server: %s (root) and %s in %s", server.urls[0], a.underlay_listen, a.netns)
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await server.stop()


def _root_ca(path: str | None, cert_file: str) -> str | None:
    """The CA published as ``kube-root-ca.crt``: ``path``, else the ``ca.crt`` beside the serving certificate."""
    p = Path(path) if path else Path(cert_file).with_name("ca.crt")
    return p.read_text() if path or p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podnet-lab-apirunner")
    ap.add_argument("--netns", required=True, help="netns holding the underlay address")
    ap.add_argument("--underlay-listen", required=True, metavar="IP:PORT")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--state")
    ap.add_argument("--cluster-cidr", default="10.244.0.0/16")
    ap.add_argument("--service-cidr", default="10.96.0.0/12")
    ap.add_argument("--node-cidr-mask", type=int, default=24)
    ap.add_argument("--token-auth-file", required=True,
                    help="kube-apiserver's static token file; requests without one of its tokens get 401")
    ap.add_argument("--tls-cert-file", required=True, help="the HTTPS serving certificate (PEM)")
    ap.add_argument("--tls-private-key-file", required=True)
    ap.add_argument("--root-ca-file", help="the CA published as every namespace's kube-root-ca.crt ConfigMap; "
                                           "default: ca.crt beside --tls-cert-file, when present")
    ap.add_argument("--rbac-file", help="authorise with the RBAC documents of this manifest (deploy/podnet.yaml)")
    ap.add_argument("--pod-log-dir", help="the kubelets' pod log root (<run dir>/logs/pods) for pods/log; "
                                          "pods/exec finds the kubelets' records in that run dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
