"""Credentials read from files, re-read periodically (rotating tokens and certificates).

Projected service-account tokens (in-cluster) and kubeconfig ``tokenFile``
entries rotate on disk. :class:`FileTokenSource` does what client-go's
``NewCachedFileTokenSource`` does:

- the file is read at most once per ``period`` (client-go: one minute) and
  the token is served from memory in between;
- :meth:`FileTokenSource.reset` (after a 401) makes the next call read the
  file again;
- a read that fails, or finds an empty file, after a good read keeps serving
  the last good token (the kubelet rewrites the file atomically, but a
  missing mount must not drop a working credential); with no good read yet it
  raises :class:`~podnet.kube.execauth.CredentialError` with a one-line
  message.

The clock is a parameter (monotonic seconds), so tests need no patching.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from podnet.kube.execauth import CredentialError

__all__ = ["FileTokenSource", "FileCertSource", "DEFAULT_PERIOD", "CERT_PERIOD"]

DEFAULT_PERIOD = 60.0


class FileTokenSource:
    def __init__(self, path: str | Path, *, period: float = DEFAULT_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.period = period
        self._clock = clock
        self._token: str | None = None
        self._read_at: float | None = None
        self.reads = 0
        """How many times the file was read (for tests and metrics)."""

    def token(self) -> str:
        """The current token (see the module docstring for when the file is read)."""
        now = self._clock()
        if self._token is not None and self._read_at is not None and now - self._read_at < self.period:
            return self._token
        self.reads += 1
        try:
            text = self.path.read_text().strip()
        except OSError as e:
            text, why = "", e.strerror or str(e)
        else:
            why = "the file is empty"
        if text:
            self._token, self._read_at = text, now
            return text
        if self._token is not None:
            return self._token
        raise CredentialError(f"cannot read token file {self.path}: {why}")

    def reset(self) -> None:
        """Forget when the file was read: the next :meth:`token` reads it again."""
        self._read_at = None


CERT_PERIOD = 300.0
"""client-go re-reads client certificate files every five minutes."""


class FileCertSource:
    """A client certificate and key given as files, re-read at most once per ``period``.

    Kubelet-style kubeconfigs point at files that are rotated in place
    (``kubelet-client-current.pem``); like client-go, the files are re-read
    every five minutes and a changed pair is handed to new connections (the
    API client then replaces its connection pool). A failed read keeps the
    last good pair; with none yet it raises
    :class:`~podnet.kube.execauth.CredentialError`.
    """

    def __init__(self, cert_file: str | Path, key_file: str | Path, *, period: float = CERT_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self.period = period
        self._clock = clock
        self._pair: tuple[str, str] | None = None
        self._read_at: float | None = None

    def pair(self) -> tuple[str, str]:
        """(certificate PEM, key PEM) as last read."""
        now = self._clock()
        if self._pair is not None and self._read_at is not None and now - self._read_at < self.period:
            return self._pair
        try:
            pair = (self.cert_file.read_text(), self.key_file.read_text())
        except OSError as e:
            if self._pair is not None:
                return self._pair
            raise CredentialError(f"cannot read client certificate: {e.filename}: {e.strerror}") from None
        self._pair, self._read_at = pair, now
        return pair
