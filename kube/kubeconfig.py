"""Where the API server is and how to authenticate: flags, kubeconfig, in-cluster.

:func:`resolve` applies the precedence of kube-proxy and client-go:

1. ``--kubeconfig FILE``: that file only (it must exist); ``--master`` given
   too overrides only its server URL and keeps its credentials (kube-proxy's
   ``ConfigOverrides{ClusterInfo: {Server: master}}``);
2. ``--master URL`` alone: that URL, no credentials, no kubeconfig read
   (kube-proxy loads nothing else in this case);
3. neither: ``$KUBECONFIG`` (a ``:``-separated list, merged by client-go's
   rules, see :mod:`podnet.kube.kubeconfig_merge`) or, when it is unset or
   empty, ``~/.kube/config``; when that configures nothing (no file exists,
   or the files are empty) the in-cluster service-account config; when there
   is none of these either, :class:`ConfigError`.

Every step taken is recorded in :attr:`ClientConfig.steps` (and, when nothing
is found, in the :class:`ConfigError` message): what was looked at and what it
yielded, one line each. :meth:`podnet.kube.client.ApiClient.from_flags`, the
one function every podnet daemon uses to reach the API, logs these lines once
at start-up, so a daemon never waits on an API it never found without saying
why.

Relative paths inside a kubeconfig (certificate-authority, client-certificate,
client-key, tokenFile, an exec command with a ``/``) resolve against the
directory of the file that holds them.

Credentials: ``token``, ``tokenFile`` (re-read periodically by
:class:`~podnet.kube.tokensource.FileTokenSource`; when readable it wins over
``token``, as in client-go), client certificate and key (data or files), and
exec plugins (:mod:`podnet.kube.execauth`). ``auth-provider`` plugins are
refused with a clear error. Everything here is pure apart from reading the
files it is pointed at: the environment, the home directory and the
filesystem root are parameters, so tests need no patching.
"""

from __future__ import annotations

import base64
import os
import pwd
import ssl
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from podnet.kube.errors import ConfigError
from podnet.kube.execauth import ExecConfig, parse_exec_config
from podnet.kube.kubeconfig_merge import is_empty, load_merged, read_doc, resolve_paths, split_kubeconfig_env

__all__ = ["ClientConfig", "ConfigError", "load_kubeconfig", "parse_kubeconfig", "in_cluster", "resolve", "SA_DIR",
           "home_dir"]

SA_DIR = "var/run/secrets/kubernetes.io/serviceaccount"


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
    tls_server_name: str | None = None
    namespace: str = "default"
    exec: ExecConfig | None = None
    """An exec credential plugin (token and/or client certificate on demand)."""
    source: str = field(default="flags", compare=False)
    """Where this came from, for one startup log line."""
    steps: tuple[str, ...] = field(default=(), compare=False)
    """Each discovery step :func:`resolve` took, in order (logged once by the client)."""

    @property
    def is_https(self) -> bool:
        return self.server.lower().startswith("https://")

    @property
    def has_static_cert(self) -> bool:
        return bool(self.cert_data or self.cert_file)

    def bearer(self) -> str | None:
        """The bearer token read now, uncached: ``token_file`` when readable, else ``token``.

        The API client uses a cached :class:`~podnet.kube.tokensource.FileTokenSource` instead.
        """
        if self.token_file:
            try:
                text = Path(self.token_file).read_text().strip()
                if text:
                    return text
            except OSError:
                pass
        return self.token or None

    def ssl_context(self, client_cert: tuple[str, str] | None = None) -> ssl.SSLContext | None:
        """The TLS context for an https server (None for plain http).

        ``client_cert`` is a (certificate PEM, key PEM) pair as the client
        read it last (rotating certificate files, exec plugin); without it the
        configured certificate data or files are loaded.
        """
        if not self.is_https:
            return None
        ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data or self.ca_file:
            try:
                ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"certificate-authority: {e}") from None
        if client_cert is not None:
            _load_client_cert(ctx, client_cert[0], None, client_cert[1], None)
        elif self.has_static_cert:
            _load_client_cert(ctx, self.cert_data, self.cert_file, self.key_data, self.key_file)
        return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert_data: str | None, cert_file: str | None,
                      key_data: str | None, key_file: str | None) -> None:
    # ssl only loads key material from files: stage inline data in a private
    # temporary directory that is removed at once.
    with tempfile.TemporaryDirectory(prefix="podnet-kube-") as tmp:
        cert, key = cert_file, key_file
        if cert_data:
            cert = os.path.join(tmp, "cert.pem")
            _write_private(cert, cert_data)
        if key_data:
            key = os.path.join(tmp, "key.pem")
            _write_private(key, key_data)
        try:
            ctx.load_cert_chain(cert, key)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"client certificate/key: {e}") from None


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
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def _named(items: Any, name: str, what: str) -> Mapping[str, Any]:
    for item in items or ():
        if isinstance(item, Mapping) and item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, Mapping) else {}
    raise ConfigError(f"kubeconfig: no {what} named {name!r}")


def parse_kubeconfig(doc: Mapping[str, Any], base_dir: str | Path = ".", context: str | None = None) -> ClientConfig:
    """The config for ``context`` (default: current-context) of a parsed kubeconfig.

    Relative paths resolve against ``base_dir`` (already-absolute ones, as
    left by :func:`~podnet.kube.kubeconfig_merge.resolve_paths`, stay).
    """
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
    ca_b64 = cluster.get("certificate-authority-data") or None
    ca_file = _path(cluster.get("certificate-authority"), base)
    exec_cfg = None
    if user.get("exec"):
        exec_cluster = {**cluster, "certificate-authority": ca_file}
        exec_cfg = parse_exec_config(_exec_with_base(user["exec"], base), exec_cluster, ca_b64)
    elif user.get("auth-provider") and not (user.get("token") or user.get("tokenFile") or
                                            user.get("client-certificate") or user.get("client-certificate-data")):
        name = (user["auth-provider"] or {}).get("name") if isinstance(user["auth-provider"], Mapping) else None
        raise ConfigError(f"kubeconfig: auth-provider {name!r} is not supported; use an exec credential plugin")
    return ClientConfig(
        server=str(server).rstrip("/"),
        token=user.get("token") or None,
        token_file=_path(user.get("tokenFile"), base),
        ca_data=_b64(ca_b64, "certificate-authority-data") if ca_b64 else None,
        ca_file=ca_file,
        cert_data=_b64(user["client-certificate-data"], "client-certificate-data")
        if user.get("client-certificate-data")
        else None,
        cert_file=_path(user.get("client-certificate"), base),
        key_data=_b64(user["client-key-data"], "client-key-data") if user.get("client-key-data") else None,
        key_file=_path(user.get("client-key"), base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        namespace=ctx.get("namespace") or "default",
        exec=exec_cfg,
        source=f"kubeconfig context {ctx_name}",
    )


def _exec_with_base(exec_: Any, base: Path) -> Any:
    if isinstance(exec_, Mapping) and isinstance(exec_.get("command"), str) and "/" in exec_["command"]:
        return {**exec_, "command": _path(exec_["command"], base)}
    return exec_


def load_kubeconfig(path: str | Path, context: str | None = None) -> ClientConfig:
    """One kubeconfig file (it must exist), relative paths against its directory."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"kubeconfig {p}: no such file")
    cfg = parse_kubeconfig(resolve_paths(read_doc(p), p.parent), p.parent, context)
    return replace(cfg, source=f"{p} ({cfg.source})")


def in_cluster(environ: Mapping[str, str], root: str | Path = "/") -> ClientConfig | None:
    """The service-account config when running in a pod, else None.

    The token is given as a file (re-read periodically by the client: bound
    tokens rotate).
    """
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


def home_dir(environ: Mapping[str, str]) -> Path:
    """$HOME from ``environ``, else the user database's home of this uid (as client-go's homedir)."""
    if environ.get("HOME"):
        return Path(environ["HOME"])
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # pragma: no cover - uid without a passwd entry
        return Path("/")


def resolve(
    master: str | None = None,
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    root: str | Path = "/",
    home: str | Path | None = None,
    context: str | None = None,
) -> ClientConfig:
    """Pick the config by kube-proxy's / client-go's precedence (see the module docstring)."""
    env = os.environ if environ is None else environ
    steps: list[str] = []
    if kubeconfig:
        cfg = load_kubeconfig(kubeconfig, context)
        steps.append(f"--kubeconfig {kubeconfig}: {cfg.server} ({cfg.source})")
    elif master:
        steps.append(f"--master {master}: no kubeconfig is read (credentials come only from a kubeconfig)")
        return ClientConfig(server=master.rstrip("/"), source="--master", steps=tuple(steps))
    else:
        steps.append("--kubeconfig and --master not given")
        cfg = _default_chain(env, root, Path(home) if home is not None else home_dir(env), context, steps)
    if master:
        steps.append(f"--master {master} replaces the server {cfg.server}")
        cfg = replace(cfg, server=master.rstrip("/"), source=f"--master with {cfg.source}")
    return replace(cfg, steps=tuple(steps))


def _default_chain(env: Mapping[str, str], root: str | Path, home: Path, context: str | None,
                   steps: list[str]) -> ClientConfig:
    paths = split_kubeconfig_env(env.get("KUBECONFIG"))
    where = "$KUBECONFIG" if paths else "~/.kube/config"
    if not paths:
        steps.append("$KUBECONFIG unset or empty")
        paths = [str(home / ".kube" / "config")]
    doc, used = load_merged(paths)
    if not is_empty(doc):
        cfg = parse_kubeconfig(doc, used[0].parent, context)
        steps.append(f"{where} {':'.join(map(str, used))}: {cfg.server} ({cfg.source})")
        return replace(cfg, source=f"{where} {':'.join(map(str, used))} ({cfg.source})")
    missing = [p for p in paths if not Path(p).exists()]
    steps.append(f"{where} {':'.join(paths)}: configures nothing"
                 + (f" ({', '.join(missing)}: no such file)" if missing else " (empty)"))
    cfg_ic = in_cluster(env, root)
    if cfg_ic is not None:
        steps.append(f"in-cluster: {cfg_ic.server}, token file {cfg_ic.token_file} (re-read as it rotates), "
                     f"CA {cfg_ic.ca_file or '(none: system roots)'}")
        return cfg_ic
    steps.append(f"in-cluster: {_why_not_in_cluster(env, root)}")
    raise ConfigError("no API server: give --master or --kubeconfig; tried: " + "; ".join(steps))


def _why_not_in_cluster(env: Mapping[str, str], root: str | Path) -> str:
    if not env.get("KUBERNETES_SERVICE_HOST") or not env.get("KUBERNETES_SERVICE_PORT"):
        return "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT not set (not running in a pod)"
    return f"{Path(root) / SA_DIR / 'token'}: no such file (no service-account token mounted)"
