"""Bearer-token authentication, as kube-apiserver's ``--token-auth-file`` with anonymous requests refused.

The token file is kube-apiserver's static token file: one CSV record per token,
``token,user,uid[,"group1,group2"]``; fewer than three columns is an error naming the line.
A request authenticates with ``Authorization: Bearer <token>`` (the scheme matched
case-insensitively and the header split on spaces, as client-go's bearer authenticator
does). Every request without a valid token answers 401 with kube-apiserver's Status body
(``reason: Unauthorized``), except the paths kube-apiserver's ``system:public-info-viewer``
role opens to everyone: /healthz, /livez, /readyz, /version and their sub-paths.

Tokens are compared through their SHA-256 digests, so a lookup's timing says nothing
about how much of a guessed token matched.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

__all__ = ["User", "TokenAuthenticator", "UnionAuthenticator", "parse_token_file", "is_public", "UNAUTHORIZED",
           "PUBLIC_PATHS"]

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")

UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
"""kube-apiserver's answer to a request no authenticator accepted."""


@dataclass(frozen=True)
class User:
    name: str
    uid: str
    groups: tuple[str, ...] = ()


def is_public(path: str) -> bool:
    """True for the paths system:public-info-viewer grants to unauthenticated clients."""
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token_file(text: str, source: str = "token file") -> dict[str, User]:
    """token -> User from the static token file's text; ValueError naming the line for a bad record."""
    out: dict[str, User] = {}
    for lineno, rec in enumerate(csv.reader(io.StringIO(text)), 1):
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue
        if len(rec) < 3:
            raise ValueError(f"{source} line {lineno}: must have at least 3 columns (token, user name, user uid), "
                             f"found {len(rec)}")
        token, name, uid = (x.strip() for x in rec[:3])
        if not token:
            raise ValueError(f"{source} line {lineno}: empty token")
        if not name:
            raise ValueError(f"{source} line {lineno}: empty user name")
        if token in out:
            raise ValueError(f"{source} line {lineno}: duplicate token")
        groups = tuple(g.strip() for g in rec[3].split(",") if g.strip()) if len(rec) > 3 else ()
        out[token] = User(name, uid, groups)
    return out


class TokenAuthenticator:
    def __init__(self, users: Mapping[str, User]) -> None:
        self._by_digest = {_digest(t): u for t, u in users.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> "TokenAuthenticator":
        return cls(parse_token_file(Path(path).read_text(), str(path)))

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: str | None) -> User | None:
        """The user an ``Authorization`` header proves, or None."""
        if not authorization:
            return None
        parts = authorization.strip().split(" ", 2)
        if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
            return None
        return self._by_digest.get(_digest(parts[1]))


class UnionAuthenticator:
    """kube-apiserver's union of token authenticators: the first that accepts the header decides."""

    def __init__(self, *authenticators: object) -> None:
        self.authenticators = authenticators

    def authenticate(self, authorization: str | None) -> User | None:
        for a in self.authenticators:
            user = a.authenticate(authorization)  # type: ignore[attr-defined]
            if user is not None:
                return user
        return None
