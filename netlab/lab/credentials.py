"""The lab's API credentials: a CA and HTTPS serving certificate, and one random bearer token per
identity, issued at ``lab up``.

kubectl (client-go) sends a kubeconfig's credentials only over HTTPS, and a token sent in clear
on the underlay could be read by any pod on it, so the API server serves HTTPS only: a lab CA
(its private key deleted once the serving certificate is signed, so nothing else can be
issued) and a serving certificate for 127.0.0.1, the underlay address and the
``kubernetes`` Service's names and ClusterIP. Every kubeconfig carries the CA.

Static identities: the user's admin (``kubernetes-admin`` in ``system:masters``, as kubeadm's
admin.conf) and one kubelet per node (``system:node:<node>`` in ``system:nodes``), each with its
own token, so a token read from one component's files names that component. podnet's daemons have
none: they run as pods of deploy/podnet.yaml with its ServiceAccounts' TokenRequest tokens.

Written under ``<run dir>/credentials/`` (directory 0700, files 0600, created with those
modes so no other user can read them even for a moment): ``tokens.csv`` in kube-apiserver's
static token file format for the API server, and one kubeconfig per identity. The user's
kubeconfig (``<run dir>/kubeconfig``, 0600) carries the admin token.

The API server starts with RBAC on and only kube-apiserver's bootstrap roles
(:func:`bootstrap_rbac_file`, an empty document set); deploy/podnet.yaml's ClusterRoles and bindings
arrive when the lab applies the manifest, so every lab run proves they grant what the daemons call.
The kubelets (``system:node:<node>``) are authorised by the Node authorizer and NodeRestriction,
each limited to its own Node, the pods bound to it and what they reference. Pods' service-account
tokens are not made here: the kubelets request them through the TokenRequest API.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import subprocess
from pathlib import Path
from typing import Sequence

from podnet.netlab.lab.topology import LabPlan

__all__ = ["Identity", "identities", "issue", "rbac_manifest", "bootstrap_rbac_file", "token_file", "kubeconfig_path", "kubeconfig_text",
           "write_private", "make_pki", "ca_file", "serving_files", "kubernetes_service_ip"]

SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated")
SERVING_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")
"""The API server certificate's DNS names (kubeadm's, plus localhost)."""


class Identity:
    __slots__ = ("key", "user", "groups")

    def __init__(self, key: str, user: str, groups: tuple[str, ...]) -> None:
        self.key, self.user, self.groups = key, user, groups


def identities(p: LabPlan) -> list[Identity]:
    out = [Identity("admin", "kubernetes-admin", ("system:masters",))]
    for n in p.nodes:
        out.append(Identity(f"kubelet-{n.name}", f"system:node:{n.name}", ("system:nodes",)))
    return out


def rbac_manifest() -> Path:
    """deploy/podnet.yaml as installed with the package."""
    return Path(__file__).with_name("podnet.yaml")


def bootstrap_rbac_file(p: LabPlan) -> Path:
    """The API server's ``--rbac-file``: no documents, so RBAC is on with the bootstrap roles only
    (written here on first use)."""
    f = _dir(p) / "rbac-bootstrap.yaml"
    if not f.exists():
        f.write_text("# RBAC on with kube-apiserver's bootstrap roles only; podnet's come with deploy/podnet.yaml\n")
    return f


def _dir(p: LabPlan) -> Path:
    return p.run_dir / "credentials"


def token_file(p: LabPlan) -> Path:
    return _dir(p) / "tokens.csv"


def kubeconfig_path(p: LabPlan, key: str) -> Path:
    return _dir(p) / f"{key}.kubeconfig"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that is 0600 from its creation on (replacing an older one atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def kubeconfig_text(lab: str, server: str, token: str, ca_pem: str) -> str:
    """A kubeconfig for ``server`` trusting the CA ``ca_pem``, authenticating with the bearer ``token``."""
    n = f"pnl-{lab}"
    ca = base64.b64encode(ca_pem.encode()).decode()
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {n}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n"
        f"users:\n- name: {n}\n  user:\n    token: {token}\n"
        f"contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n    namespace: default\n"
        f"current-context: {n}\n"
    )


def ca_file(p: LabPlan) -> Path:
    return _dir(p) / "ca.crt"


def serving_files(p: LabPlan) -> tuple[Path, Path]:
    """(certificate, private key) the API server serves HTTPS with."""
    return _dir(p) / "apiserver.crt", _dir(p) / "apiserver.key"


def make_pki(d: Path, ips: Sequence[str], names: Sequence[str] = SERVING_NAMES, days: int = 365) -> None:
    """A lab CA (``ca.crt``; its key is deleted once used) and the API server's serving certificate
    (``apiserver.crt``/``apiserver.key``) for ``ips`` and ``names``, EC P-256, with the openssl CLI.
    Keys are 0600 in ``d``."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "apiserver.key", d / "apiserver.csr", d / "apiserver.crt", d / "apiserver.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    old = os.umask(0o077)
    try:
        _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", str(days * 10),
                 "-subj", "/CN=podnet-lab-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=kube-apiserver")
        san = ",".join([f"IP:{ip}" for ip in ips] + [f"DNS:{n}" for n in names])
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                 "-set_serial", str(int.from_bytes(secrets.token_bytes(16), "big")), "-days", str(days),
                 "-out", str(crt), "-extfile", str(ext))
    finally:
        os.umask(old)
        for f in (ca_key, csr, ext):
            f.unlink(missing_ok=True)
    ca_crt.chmod(0o644)
    crt.chmod(0o644)


def _openssl(*args: str) -> None:
    p = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {p.stderr.strip()[-300:]}")


def issue(p: LabPlan) -> dict[str, str]:
    """Fresh tokens for every identity: the token file and each component's kubeconfig (server: the
    underlay address). Returns key -> token; the admin's kubeconfig is written once the root port is known."""
    d = _dir(p)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    make_pki(d, ["127.0.0.1", p.apiserver_ip, kubernetes_service_ip(p.spec.service_cidr)])
    ca_pem = ca_file(p).read_text()
    tokens = {i.key: secrets.token_urlsafe(32) for i in identities(p)}
    lines = [f'{tokens[i.key]},{i.user},{i.key},"{",".join(i.groups)}"\n' for i in identities(p)]
    write_private(token_file(p), "".join(lines))
    for key, tok in tokens.items():
        if key != "admin":
            write_private(kubeconfig_path(p, key), kubeconfig_text(p.spec.name, p.master, tok, ca_pem))
    return tokens


def kubernetes_service_ip(service_cidr: str) -> str:
    """The ``default/kubernetes`` ClusterIP: the first address of the (first) service range."""
    net = ipaddress.ip_network(service_cidr.split(",")[0], strict=False)
    return str(net.network_address + 1)
