"""The durable IPAM store: one SQLite database per node, guarded by a per-node lock.

Why SQLite (standard library) rather than host-local's file per IP: every
change is one atomic transaction (WAL journal), so a ``kill -9`` at any moment
leaves the last committed state and never an empty or half-written
reservation (host-local's plugins#498). ``synchronous=NORMAL``: a commit is in
the WAL (page cache) before the ADD answers, which survives any process
crash; only a power cut can lose the last commits, and after a power cut
every pod on the node is gone too, so the start-up reconcile releases
whatever they held anyway (an fsync per ADD would cost 1-3 ms for nothing);
the IP is the primary key, a second guard against duplicates; lookups are
indexed, not directory scans.

Concurrency: :meth:`SqliteStore.open` takes an exclusive ``flock`` on
``<data-dir>/ipam.lock`` for the store's lifetime, so exactly one process
(the node daemon) writes the store; a second opener fails at once with
error 11 instead of racing.

Corruption (a file that is not a database, a failed integrity check, or a
row that is not an IP) is reported as error 5 naming the file; the store is
never modified when that happens.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import sqlite3
from pathlib import Path

from podnet.cni.ipam import Reservation
from podnet.cni.types import IO_FAILURE, TRY_AGAIN_LATER, CniError

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservation (
  ip TEXT PRIMARY KEY,
  network TEXT NOT NULL,
  container_id TEXT NOT NULL,
  ifname TEXT NOT NULL,
  netns TEXT NOT NULL DEFAULT '',
  pod TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS reservation_attachment ON reservation (container_id, ifname);
CREATE TABLE IF NOT EXISTS cursor (range TEXT PRIMARY KEY, last TEXT NOT NULL);
"""


class SqliteStore:
    """:class:`podnet.cni.ipam.Store` on SQLite. Not thread-safe: one owner thread."""

    def __init__(self, path: Path, lock_fd: int, db: sqlite3.Connection) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._db = db

    @classmethod
    def open(cls, data_dir: str | Path) -> "SqliteStore":
        d = Path(data_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = d / "ipam.db"
        lock_fd = os.open(d / "ipam.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise CniError(TRY_AGAIN_LATER, f"IPAM store {path} is locked by another process") from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            os.close(lock_fd)
            raise CniError(IO_FAILURE, f"IPAM store {path} is corrupt: {e}") from None
        os.chmod(path, 0o600)
        return cls(path, lock_fd, db)

    def load(self) -> tuple[list[Reservation], dict[str, str]]:
        try:
            rows = self._db.execute(
                "SELECT ip, network, container_id, ifname, netns, pod FROM reservation").fetchall()
            cursors = dict(self._db.execute("SELECT range, last FROM cursor").fetchall())
        except sqlite3.DatabaseError as e:
            raise CniError(IO_FAILURE, f"IPAM store {self.path} is corrupt: {e}") from None
        out = []
        for row in rows:
            try:
                ipaddress.ip_address(row[0])
            except ValueError:
                raise CniError(IO_FAILURE, f"IPAM store {self.path} is corrupt: bad address {row[0]!r}") from None
            out.append(Reservation(*row))
        return out, cursors

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise CniError(IO_FAILURE, f"IPAM store {self.path}: {e}") from None

    def reserve(self, reservations: list[Reservation], cursors: dict[str, str]) -> None:
        stmts = [("INSERT INTO reservation VALUES (?, ?, ?, ?, ?, ?)",
                  (r.ip, r.network, r.container_id, r.ifname, r.netns, r.pod)) for r in reservations]
        stmts += [("INSERT OR REPLACE INTO cursor VALUES (?, ?)", kv) for kv in cursors.items()]
        self._tx(stmts)

    def release(self, ips: list[str]) -> None:
        self._tx([("DELETE FROM reservation WHERE ip = ?", (ip,)) for ip in ips])

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            os.close(self._lock_fd)
