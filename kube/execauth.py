"""exec credential plugins (``users[].user.exec``), as client-go runs them.

A kubeconfig user may name a command that prints an ``ExecCredential``
(``client.authentication.k8s.io/v1`` or ``v1beta1``) on stdout: a bearer
token, or a client certificate and key, optionally with an
``expirationTimestamp``. :class:`ExecAuthenticator` guarantees:

- the command runs with its ``args``, the injected base environment plus the
  kubeconfig's ``env`` entries (these win), and ``KUBERNETES_EXEC_INFO`` set to
  an ``ExecCredential`` whose ``spec.interactive`` is false (daemons have no
  terminal; stdin is /dev/null) and whose ``spec.cluster`` carries the
  cluster's server, CA data, tls-server-name, proxy-url,
  insecure-skip-tls-verify and exec extension when ``provideClusterInfo`` is
  true;
- the credential is cached until its ``expirationTimestamp`` (forever when it
  has none) and the plugin re-runs after that; concurrent callers share one
  run (single flight);
- after a 401, :meth:`ExecAuthenticator.refresh` re-runs the plugin once for
  the credential that was rejected (callers that used an older credential do
  not trigger another run);
- every failure (command missing, non-zero exit, timeout, bad output) is an
  :class:`ExecPluginError` with a one-line, human message; the runner never
  raises anything else. Failures are not cached: the next call runs again
  (the caller's backoff bounds the rate).

Clocks and the process runner are parameters, so tests need no patching.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from podnet.kube.errors import ConfigError

__all__ = ["CredentialError", "ExecPluginError", "ExecConfig", "ExecCredential", "ExecAuthenticator",
           "parse_exec_config", "parse_exec_credential", "exec_info", "run_plugin", "API_VERSIONS"]

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
EXEC_EXTENSION = "client.authentication.k8s.io/exec"
STDERR_TAIL = 400


class CredentialError(Exception):
    """Credentials for a request could not be obtained (a token file, an exec plugin)."""


class ExecPluginError(CredentialError):
    """The exec credential plugin failed; the message says how, in one line."""


@dataclass(frozen=True)
class ExecConfig:
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = API_VERSIONS[0]
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"
    cluster_json: str = "{}"
    """spec.cluster of KUBERNETES_EXEC_INFO without the CA data (JSON text)."""
    ca_file: str | None = None
    """Read at run time into spec.cluster.certificate-authority-data."""


@dataclass(frozen=True)
class ExecCredential:
    token: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    expiry: datetime | None = None
    generation: int = field(default=0, compare=False)
    """Which run produced it (to refresh only once per rejected credential)."""

    def expired(self, now: datetime) -> bool:
        return self.expiry is not None and now > self.expiry


def _err(msg: str) -> ExecPluginError:
    return ExecPluginError(msg)


def parse_exec_config(exec_: Any, cluster: Mapping[str, Any], ca_data_b64: str | None = None) -> ExecConfig:
    """The ``exec`` block of a kubeconfig user, validated as client-go validates it.

    Raises :class:`~podnet.kube.errors.ConfigError` for a block that can never work.
    """

    if not isinstance(exec_, Mapping):
        raise ConfigError("kubeconfig: user exec is not a mapping")
    command = exec_.get("command")
    if not isinstance(command, str) or not command:
        raise ConfigError("kubeconfig: exec: command must be specified")
    api_version = exec_.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise ConfigError(f"kubeconfig: exec: apiVersion {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    mode = exec_.get("interactiveMode") or ""
    if not mode:
        if api_version == API_VERSIONS[0]:
            raise ConfigError("kubeconfig: exec: interactiveMode must be specified for client.authentication.k8s.io/v1")
        mode = "IfAvailable"
    if mode not in INTERACTIVE_MODES:
        raise ConfigError(f"kubeconfig: exec: invalid interactiveMode {mode!r}")
    args = exec_.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError("kubeconfig: exec: args must be a list of strings")
    env: list[tuple[str, str]] = []
    for e in exec_.get("env") or []:
        if not isinstance(e, Mapping) or not isinstance(e.get("name"), str) or not isinstance(e.get("value", ""), str):
            raise ConfigError("kubeconfig: exec: env entries need a name and a string value")
        env.append((e["name"], e.get("value", "")))
    spec_cluster: dict[str, Any] = {"server": cluster.get("server") or ""}
    for key in ("tls-server-name", "proxy-url"):
        if cluster.get(key):
            spec_cluster[key] = cluster[key]
    for key in ("insecure-skip-tls-verify", "disable-compression"):
        if cluster.get(key):
            spec_cluster[key] = bool(cluster[key])
    if ca_data_b64:
        spec_cluster["certificate-authority-data"] = ca_data_b64
    for ext in cluster.get("extensions") or []:
        if isinstance(ext, Mapping) and ext.get("name") == EXEC_EXTENSION:
            spec_cluster["config"] = ext.get("extension")
    return ExecConfig(
        command=command,
        args=tuple(args),
        env=tuple(env),
        api_version=api_version,
        install_hint=str(exec_.get("installHint") or ""),
        provide_cluster_info=bool(exec_.get("provideClusterInfo", False)),
        interactive_mode=mode,
        cluster_json=json.dumps(spec_cluster, sort_keys=True),
        ca_file=cluster.get("certificate-authority") if not ca_data_b64 else None,
    )


def exec_info(cfg: ExecConfig) -> str:
    """The KUBERNETES_EXEC_INFO value (JSON) for one run."""
    spec: dict[str, Any] = {"interactive": False}
    if cfg.provide_cluster_info:
        cluster = json.loads(cfg.cluster_json)
        if cfg.ca_file and "certificate-authority-data" not in cluster:
            try:
                cluster["certificate-authority-data"] = base64.b64encode(Path(cfg.ca_file).read_bytes()).decode()
            except OSError as e:
                raise _err(f"exec plugin: cannot read certificate-authority {cfg.ca_file}: {e.strerror}") from None
        spec["cluster"] = cluster
    return json.dumps({"kind": "ExecCredential", "apiVersion": cfg.api_version, "spec": spec}, sort_keys=True)


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a string")
    t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("no time zone")
    return t


def parse_exec_credential(stdout: bytes | str, api_version: str) -> ExecCredential:
    """The credential in a plugin's stdout, checked as client-go checks it."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise _err("exec plugin: decoding stdout: not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise _err("exec plugin: decoding stdout: not an ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise _err(f"exec plugin is configured to use API version {api_version}, "
                   f"plugin returned version {doc.get('apiVersion')}")
    status = doc.get("status")
    if not isinstance(status, dict):
        raise _err("exec plugin didn't return a status field")
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData") or None, status.get("clientKeyData") or None
    if (cert is None) != (key is None):
        raise _err("exec plugin returned only certificate or key, not both")
    if token is None and cert is None:
        raise _err("exec plugin didn't return a token or cert/key pair")
    if not all(v is None or isinstance(v, str) for v in (token, cert, key)):
        raise _err("exec plugin: status fields must be strings")
    expiry = None
    if status.get("expirationTimestamp"):
        try:
            expiry = _parse_time(status["expirationTimestamp"])
        except ValueError:
            raise _err(f"exec plugin: bad expirationTimestamp {status['expirationTimestamp']!r}") from None
    return ExecCredential(token=token, cert_pem=cert, key_pem=key, expiry=expiry)


Runner = Callable[[list[str], dict[str, str], float], Awaitable[tuple[int, bytes, bytes]]]
"""(argv, env, timeout) -> (exit code, stdout, stderr); raises FileNotFoundError/PermissionError/TimeoutError."""


async def run_plugin(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run one process with stdin from /dev/null; kill it if it outlives ``timeout`` seconds."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err


def _tail(stderr: bytes) -> str:
    text = " ".join(stderr.decode(errors="replace").split())
    return text[-STDERR_TAIL:]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ExecAuthenticator:
    """Runs one exec plugin and caches its credential (see the module docstring)."""

    def __init__(
        self,
        config: ExecConfig,
        *,
        environ: Mapping[str, str],
        now: Callable[[], datetime] = utcnow,
        runner: Runner = run_plugin,
        timeout: float = 60.0,
    ) -> None:
        self.config = config
        self._environ = dict(environ)
        self._now = now
        self._runner = runner
        self._timeout = timeout
        self._cred: ExecCredential | None = None
        self._lock: asyncio.Lock | None = None
        self.runs = 0
        """How many times the plugin was started (successful or not)."""

    def env(self) -> dict[str, str]:
        """The plugin's environment: base, then the kubeconfig's env, then KUBERNETES_EXEC_INFO."""
        env = dict(self._environ)
        env.update(self.config.env)
        env["KUBERNETES_EXEC_INFO"] = exec_info(self.config)
        return env

    async def credential(self) -> ExecCredential:
        """The cached credential, running the plugin when there is none or it expired."""
        cred = self._cred
        if cred is not None and not cred.expired(self._now()):
            return cred
        async with self._get_lock():
            cred = self._cred
            if cred is not None and not cred.expired(self._now()):
                return cred
            return await self._run()

    async def refresh(self, rejected: ExecCredential | None) -> ExecCredential:
        """After a 401 with ``rejected``: re-run once (unless another caller already did)."""
        async with self._get_lock():
            if self._cred is not None and rejected is not None and self._cred.generation != rejected.generation:
                return self._cred
            return await self._run()

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _run(self) -> ExecCredential:
        cfg = self.config
        if cfg.interactive_mode == "Always":
            raise _err("exec plugin cannot support interactive mode: standard input is not a terminal")
        self.runs += 1
        argv = [cfg.command, *cfg.args]
        hint = f" ({cfg.install_hint.strip()})" if cfg.install_hint.strip() else ""
        try:
            code, out, err = await self._runner(argv, self.env(), self._timeout)
        except FileNotFoundError:
            raise _err(f"exec: executable {cfg.command} not found{hint}") from None
        except PermissionError:
            raise _err(f"exec: executable {cfg.command} is not executable") from None
        except TimeoutError:
            raise _err(f"exec: executable {cfg.command} did not finish within {self._timeout:g}s") from None
        except OSError as e:
            raise _err(f"exec: executable {cfg.command}: {e.strerror or e}") from None
        if code != 0:
            tail = _tail(err)
            raise _err(f"exec: executable {cfg.command} failed with exit code {code}" + (f": {tail}" if tail else ""))
        cred = parse_exec_credential(out, cfg.api_version)
        self._cred = ExecCredential(cred.token, cred.cert_pem, cred.key_pem, cred.expiry, generation=self.runs)
        return self._cred
