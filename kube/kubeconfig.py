"""Where the API server is and how to authenticate: flags, kubeconfig, in-cluster.

:func:`resolve` applies the precedence every podnet daemon uses:
``--master`` > ``--kubeconfig`` > ``$KUBECONFIG`` > in-cluster service account >
``~/.kube/config``. ``--master`` together with a kubeconfig keeps the
kubeconfig's credentials and overrides only the server URL (as kube-proxy does).

Everything here is pure apart from reading the files it is pointed at: the
environment and the filesystem root are parameters, so tests need no patching.
Tokens given as files are re-read on every request (:meth:`ClientConfig.bearer`)
because projected service-account tokens rotate. Kubeconfig files are YAML
(JSON is valid YAML); ``$KUBECONFIG`` with several paths uses the first one
that exists (no merging).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ClientConfig", "ConfigError", "load_kubeconfig", "parse_kubeconfig", "in_cluster", "resolve", "SA_DIR"]

SA_DIR = "var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(ValueError):
    """The configuration cannot be used (missing file, unknown context, ...)."""


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str | None = None
    token_file: str | None = None
    ca_data: str | None = None
    """PEM text of the CA bundle."""
    ca_file: str | None = None
    cert_data: str | None = None
    cert_file: str | None = None
    key_data: str | None = None
    key_file: str | None = None
    insecure: bool = False
    namespace: str = "default"
    source: str = field(default="flags", compare=False)
    """Where this came from, for one startup log line."""

    @property
    def is_https(self) -> bool:
        return self.server.lower().startswith("https://")

    def bearer(self) -> str | None:
        """The bearer token, re-reading ``token_file`` (rotating tokens)."""
        if self.token:
            return self.token
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip() or None
            except OSError:
                return None
        return None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https server (None for plain http)."""
        if not self.is_https:
            return None
        ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data or self.ca_file:
            ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.cert_data or self.cert_file:
            _load_client_cert(ctx, self)
        return ctx


def _load_client_cert(ctx: ssl.SSLContext, cfg: ClientConfig) -> None:
    # ssl only loads key material from files: stage inline data in a private
    # temporary directory that is removed at once.
    with tempfile.TemporaryDirectory(prefix="podnet-kube-") as tmp:
        cert, key = cfg.cert_file, cfg.key_file
        if cfg.cert_data:
            cert = os.path.join(tmp, "cert.pem")
            _write_private(cert, cfg.cert_data)
        if cfg.key_data:
            key = os.path.join(tmp, "key.pem")
            _write_private(key, cfg.key_data)
        ctx.load_cert_chain(cert, key)  # type: ignore[arg-type]


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _b64(value: Any, what: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}: not base64: {e}") from None


def _path(value: str | None, base: Path) -> str | None:
    if not value:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _named(items: Any, name: str, what: str) -> Mapping[str, Any]:
    for item in items or ():
        if isinstance(item, Mapping) and item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, Mapping) else {}
    raise ConfigError(f"kubeconfig: no {what} named {name!r}")


def parse_kubeconfig(doc: Mapping[str, Any], base_dir: str | Path = ".", context: str | None = None) -> ClientConfig:
    """The config for ``context`` (default: current-context) of a parsed kubeconfig."""
    if not isinstance(doc, Mapping):
        raise ConfigError("kubeconfig: not a mapping")
    base = Path(base_dir)
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ConfigError("kubeconfig: no current-context and no context given")
    ctx = _named(doc.get("contexts"), ctx_name, "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster")
    user: Mapping[str, Any] = _named(doc.get("users"), ctx["user"], "user") if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig: cluster {ctx.get('cluster')!r} has no server")
    return ClientConfig(
        server=str(server).rstrip("/"),
        token=user.get("token") or None,
        token_file=_path(user.get("tokenFile"), base),
        ca_data=_b64(cluster["certificate-authority-data"], "certificate-authority-data")
        if cluster.get("certificate-authority-data")
        else None,
        ca_file=_path(cluster.get("certificate-authority"), base),
        cert_data=_b64(user["client-certificate-data"], "client-certificate-data")
        if user.get("client-certificate-data")
        else None,
        cert_file=_path(user.get("client-certificate"), base),
        key_data=_b64(user["client-key-data"], "client-key-data") if user.get("client-key-data") else None,
        key_file=_path(user.get("client-key"), base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=ctx.get("namespace") or "default",
        source=f"kubeconfig context {ctx_name}",
    )


def _load_doc(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise ConfigError("kubeconfig is YAML but PyYAML is not installed") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"kubeconfig: bad YAML: {e}") from None


def load_kubeconfig(path: str | Path, context: str | None = None) -> ClientConfig:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"kubeconfig {p}: {e.strerror}") from None
    cfg = parse_kubeconfig(_load_doc(text), p.parent, context)
    return _with_source(cfg, f"{p} ({cfg.source})")


def _with_source(cfg: ClientConfig, source: str) -> ClientConfig:
    from dataclasses import replace

    return replace(cfg, source=source)


def in_cluster(environ: Mapping[str, str], root: str | Path = "/") -> ClientConfig | None:
    """The service-account config when running in a pod, else None."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    sa = Path(root) / SA_DIR
    if not host or not port or not (sa / "token").exists():
        return None
    if ":" in host:
        host = f"[{host}]"
    ns_file = sa / "namespace"
    ca = sa / "ca.crt"
    return ClientConfig(
        server=f"https://{host}:{port}",
        token_file=str(sa / "token"),
        ca_file=str(ca) if ca.exists() else None,
        namespace=ns_file.read_text().strip() if ns_file.exists() else "default",
        source="in-cluster service account",
    )


def resolve(
    master: str | None = None,
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    root: str | Path = "/",
    home: str | Path | None = None,
    context: str | None = None,
) -> ClientConfig:
    """Pick the config by podnet's precedence (see the module docstring)."""
    env = os.environ if environ is None else environ
    cfg: ClientConfig | None = None
    if kubeconfig:
        cfg = load_kubeconfig(kubeconfig, context)
    elif master:
        return ClientConfig(server=master.rstrip("/"), source="--master")
    elif env.get("KUBECONFIG"):
        paths = [p for p in env["KUBECONFIG"].split(os.pathsep) if p]
        existing = [p for p in paths if Path(p).expanduser().exists()]
        if not existing:
            raise ConfigError(f"$KUBECONFIG: none of {paths} exists")
        cfg = load_kubeconfig(existing[0], context)
    else:
        cfg = in_cluster(env, root)
        if cfg is None:
            home_dir = Path(home) if home is not None else Path(env.get("HOME") or Path.home())
            default = home_dir / ".kube" / "config"
            if not default.exists():
                raise ConfigError("no API server: give --master or --kubeconfig (no in-cluster config, no ~/.kube/config)")
            cfg = load_kubeconfig(default, context)
    if master:
        from dataclasses import replace

        cfg = replace(cfg, server=master.rstrip("/"), source=f"--master with {cfg.source}")
    return cfg
