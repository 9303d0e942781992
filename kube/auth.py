"""Per-client credential state: which token and client certificate a request carries.

:class:`Authenticator` turns a :class:`~podnet.kube.kubeconfig.ClientConfig`
into :class:`Credentials` for each request, in client-go's order:

- bearer token: ``tokenFile`` (cached, re-read every minute, see
  :mod:`podnet.kube.tokensource`) when readable, else the static ``token``,
  else the exec plugin's token;
- client certificate: the kubeconfig's certificate when set (files are
  re-read every five minutes, as client-go does, so rotated kubelet
  certificates are picked up), else the exec plugin's certificate (which may
  change when the plugin re-runs).

:meth:`Authenticator.unauthorized` is called after a 401 with the credentials
that were rejected; it forgets the cached token file read and re-runs the
exec plugin (once per rejected credential), and says whether a retry could
carry different credentials. Exec plugins inherit ``environ`` (default: this
process's environment, as client-go). Failures to obtain credentials raise
:class:`~podnet.kube.execauth.CredentialError` (one-line message).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping

from podnet.kube.execauth import CredentialError, ExecAuthenticator, ExecCredential, Runner, run_plugin, utcnow
from podnet.kube.kubeconfig import ClientConfig
from podnet.kube.tokensource import CERT_PERIOD, DEFAULT_PERIOD, FileCertSource, FileTokenSource

__all__ = ["Authenticator", "Credentials"]


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    client_cert: tuple[str, str] | None = None
    """(certificate PEM, key PEM) read from files or an exec plugin; None for inline data or none."""
    exec_cred: ExecCredential | None = None
    """The exec credential these came from (identity for refresh-once)."""


class Authenticator:
    def __init__(
        self,
        config: ClientConfig,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        exec_runner: Runner = run_plugin,
        token_period: float = DEFAULT_PERIOD,
        cert_period: float = CERT_PERIOD,
    ) -> None:
        self.config = config
        self.token_source = FileTokenSource(config.token_file, period=token_period, clock=clock) \
            if config.token_file else None
        self.cert_source = None
        if config.cert_file and config.key_file and not (config.cert_data or config.key_data):
            self.cert_source = FileCertSource(config.cert_file, config.key_file, period=cert_period, clock=clock)
        self.exec = None
        if config.exec is not None:
            self.exec = ExecAuthenticator(config.exec, environ=os.environ if environ is None else environ,
                                          now=now, runner=exec_runner)

    def _static_token(self) -> str | None:
        if self.token_source is not None:
            try:
                return self.token_source.token()
            except CredentialError:
                if not self.config.token and self.exec is None:
                    raise
        return self.config.token or None

    async def credentials(self) -> Credentials:
        """What the next request carries (may run the exec plugin)."""
        token = self._static_token()
        static_cert = self.cert_source.pair() if self.cert_source is not None else None
        if self.exec is None or (token and self.config.has_static_cert):
            return Credentials(token=token, client_cert=static_cert)
        cred = await self.exec.credential()
        cert = static_cert if self.config.has_static_cert or not cred.cert_pem else (cred.cert_pem, cred.key_pem or "")
        return Credentials(token=token or cred.token, client_cert=cert, exec_cred=cred)

    async def unauthorized(self, used: Credentials) -> bool:
        """A request with ``used`` got 401: refresh; True when a retry may carry new credentials."""
        changed = False
        if self.token_source is not None:
            self.token_source.reset()
            try:
                changed = self.token_source.token() != used.token
            except CredentialError:
                changed = False
        if self.exec is not None and used.exec_cred is not None:
            fresh = await self.exec.refresh(used.exec_cred)
            changed = changed or fresh != used.exec_cred
        return changed
