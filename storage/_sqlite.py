"""SQLite connections shared safely by threads and processes.

SQLite connections must not cross threads casually nor survive a fork, and WAL writers that
start with a read and later upgrade to a write get SQLITE_BUSY immediately (the busy timeout
does not help). So: one connection per thread (per process), autocommit for reads, and every
write in `BEGIN IMMEDIATE`, which takes the write lock up front and waits politely for it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StorageError

# Connections inherited over fork(). Closing them in the child could checkpoint and delete the
# parent's WAL (POSIX locks are per process, so the child thinks it is the last user); keeping a
# reference means they are never closed there.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []


def enable_wal(conn: sqlite3.Connection, busy_timeout_s: float, path: object) -> None:
    """Switch the file to WAL (persistent: readers never block the writer, nor vice versa).

    Changing the journal mode does not wait on the busy handler, so when several threads or
    processes open a fresh file at once the loser retries here until the busy timeout.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if mode.lower() != "wal":
        raise StorageError(f"{path}: SQLite cannot use WAL here (journal mode {mode!r});"
                           " put the database on a local filesystem")


class ThreadConnections:
    """Hands each thread of each process its own configured connection to one database file."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0,
                 on_connect: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._on_connect = on_connect
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        """Forget every connection (fresh process): a new thread-local and registry."""
        self._pid = os.getpid()
        self._local = threading.local()
        self._open: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened and configured on first use."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    _ABANDONED_AFTER_FORK.extend(conn for _, conn in self._open)
                    self._reset()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                # Close connections of threads that have ended (thread pools come and go).
                alive = []
                for ref, other in self._open:
                    thread = ref()
                    if thread is not None and thread.is_alive():
                        alive.append((ref, other))
                    else:
                        other.close()
                alive.append((weakref.ref(threading.current_thread()), conn))
                self._open = alive
        return conn

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False only so close() may close other threads' connections at
        # shutdown; in normal use each connection stays in the thread that opened it.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: safe against process crashes
        conn.execute("PRAGMA foreign_keys = ON")
        if self._on_connect is not None:
            self._on_connect(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        enable_wal(conn, self.busy_timeout_s, self.path)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken with the lock up front; nested uses join the outer one."""
        conn = self.get()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # some errors (disk full, I/O) already rolled back
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this process opened (call at shutdown, threads idle)."""
        with self._lock:
            if self._pid == os.getpid():
                for _, conn in self._open:
                    conn.close()
            self._reset()
