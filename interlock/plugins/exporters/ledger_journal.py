"""The ledger's journal: an append-only local file of the rows the database does not hold yet.

The ledger writes to its database in batches (``flush_interval``), so without a
journal a process that dies between a request's answer and the next commit would
lose that request's rows. With it, each request's rows are also appended to a
journal file when the request is recorded, which is before its answer leaves
(:mod:`interlock.core.lifecycle`): one ``write`` to the operating system per
request, no ``fsync``. A crash of the process (SIGKILL, the OOM killer, a
segfault) loses nothing, because the kernel already holds the bytes; a power loss
loses at most what was written since the journal was last synced.

Files: a directory of *segments* named ``<pid>-<token>-<seq>.jsonl``. A segment's first
line is a header (the format version and a fingerprint of the database it belongs
to); each further line is one request's rows, ``[request_row, [attempt_row, ...]]``
in the form the SQLite writer stores (JSON-native values: see
:mod:`interlock.plugins.exporters.ledger`). A process appends only to its own
segments and holds an exclusive ``flock`` on each until it deletes it, so the
workers of ``serve --workers``, or replicas sharing a volume, can share one
directory.

Draining: when the exporter takes its buffer to write, the current segment is
*sealed* and the next row starts a new one. Once a write has committed, every
sealed segment is deleted: their rows are in the database (or were refused by it,
counted and logged). A failed write keeps them, and syncs them to disk. When rows
had to leave the in-memory buffer (``max_buffer``, a long database outage) the
sealed segments are kept rather than deleted, so the rows are written by the next
process that starts on this directory.

Replay: on start, the segments whose owner is gone (their lock can be taken) and
that belong to the same database are read; their rows join the buffer like new
ones, and the files are deleted once those rows are committed. Rows are idempotent
by request id (the writer skips a request already stored), so a segment whose rows
were committed just before its process died is not written twice.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import secrets
import time

log = logging.getLogger("interlock.ledger")

#: the version of the segment format (the header's ``interlock_ledger_journal``)
FORMAT = 1
SUFFIX = ".jsonl"
_CREATING = ".creating"  # a segment before its header is written and its lock taken
_CREATING_GRACE = 60.0  # seconds after which a segment still being created was left by a dead process
#: seconds between two tries to open a segment after the journal's directory refused one
RETRY_AFTER = 5.0


def fingerprint(database_url: str) -> str:
    """What a segment's header says about its database: a hash, so no password lands on disk."""
    return hashlib.sha256(database_url.encode()).hexdigest()[:24]


class _Segment:
    __slots__ = ("path", "fd", "lines", "synced")

    def __init__(self, path: str, fd: int, lines: int = 0) -> None:
        self.path = path
        self.fd = fd
        self.lines = lines  # rows appended (or read back)
        self.synced = lines  # rows known to be on disk


class Journal:
    """This process's segments in one directory (see the module docstring).

    Every method is synchronous and cheap except :meth:`open` (reads the
    directory) and :meth:`sync` (``fdatasync``; call it from a thread). A journal
    that cannot write (the directory is missing or read-only, the disk is full) logs
    once and stops journaling until a later segment can be opened; rows are still
    buffered in memory and written to the database as before.
    """

    def __init__(self, directory: str, database_url: str) -> None:
        self.directory = directory
        self._fingerprint = fingerprint(database_url)
        self._header = (
            f'{{"interlock_ledger_journal":{FORMAT},"database":"{self._fingerprint}","pid":{os.getpid()}}}\n'
        ).encode()
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._current: _Segment | None = None
        self._sealed: list[_Segment] = []
        self._kept: list[_Segment] = []  # rows that left the memory buffer: for the next process
        self._retry_at = 0.0  # after a failure: no new segment before this monotonic time
        #: why the journal is not writing now (None while it is)
        self.problem: str | None = None

    # -- start ----------------------------------------------------------------- #

    def open(self) -> list[bytes]:
        """Create the directory; claim the segments of processes that are gone and return their row lines.

        Raises ``OSError`` when the directory cannot be created or listed.
        """
        try:
            os.mkdir(self.directory, 0o700)  # not its parents: a missing parent is the operator's to create
        except FileExistsError:
            pass
        lines: list[bytes] = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(_CREATING):
                # left by a process that died while creating it, unless it is being created right now
                try:
                    if time.time() - os.stat(path).st_mtime < _CREATING_GRACE:
                        continue
                except OSError:
                    continue
            elif not name.endswith(SUFFIX):
                continue
            lines += self._claim(path)
        return lines

    def _claim(self, path: str) -> list[bytes]:
        """The row lines of ``path`` when its owner is gone and it is this database's; the lock is kept."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return []  # its owner deleted it meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return []  # a live process's segment
        try:
            data = _read_all(fd)
        except OSError as exc:
            os.close(fd)
            log.warning("ledger: cannot read the journal segment %s (%s); left in place", path, exc)
            return []
        head, _, body = data.partition(b"\n")
        if path.endswith(_CREATING) and not body:
            self._sealed.append(_Segment(path, fd))  # a segment its process never used: deleted with the rest
            return []
        if self._fingerprint.encode() not in head or b'"interlock_ledger_journal"' not in head:
            os.close(fd)  # another database's journal (or not a journal): not ours to replay or delete
            return []
        rows = body.split(b"\n")
        if rows and rows[-1]:
            # a line cut short: the process died inside the write (or the disk filled up)
            log.warning("ledger: the journal segment %s ends with an incomplete row; it is skipped", path)
        rows = [r for r in rows[:-1] if r]
        self._sealed.append(_Segment(path, fd, len(rows)))
        return rows

    # -- the request path ------------------------------------------------------- #

    def append(self, line: bytes) -> None:
        """Append one request's line (ending in a newline): one ``write`` to the OS."""
        seg = self._current
        if seg is None:
            seg = self._current = self._new_segment()
            if seg is None:
                return
        try:
            written = os.write(seg.fd, line)
            while written < len(line):  # a regular file writes it all unless the disk is full
                more = os.write(seg.fd, line[written:])
                if more == 0:
                    raise OSError(errno.ENOSPC, "no space left for the journal")
                written += more
        except OSError as exc:
            self._failed(f"cannot append to {seg.path}: {exc}")
            self._current = None
            if seg.lines:
                self._sealed.append(seg)  # what it holds still waits for the database
            else:
                _delete(seg)
            return
        seg.lines += 1

    def _new_segment(self) -> _Segment | None:
        if self._retry_at and time.monotonic() < self._retry_at:
            return None
        self._seq += 1
        base = os.path.join(self.directory, f"{self._name}-{self._seq:06d}")
        fd = -1
        try:
            # created under another name, locked, then renamed: a process scanning the directory
            # never sees a segment of ours without its lock
            fd = os.open(base + _CREATING, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, self._header)
            os.rename(base + _CREATING, base + SUFFIX)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                try:
                    os.unlink(base + _CREATING)
                except OSError:
                    pass
            self._failed(f"cannot create a segment in {self.directory}: {exc}")
            return None
        if self.problem is not None:
            log.warning("ledger: the journal in %s is writing again", self.directory)
            self.problem = None
        self._retry_at = 0.0
        return _Segment(base + SUFFIX, fd)

    def _failed(self, problem: str) -> None:
        if self.problem is None:
            log.error(
                "ledger: the journal %s; until it can write again, rows not yet in the database are "
                "lost if this process dies", problem,
            )
        self.problem = problem
        self._retry_at = time.monotonic() + RETRY_AFTER

    # -- the writer ------------------------------------------------------------- #

    def seal(self) -> None:
        """The buffer is being taken for a write: the rows so far are in sealed segments, new ones go to a new one."""
        seg = self._current
        if seg is not None and seg.lines:
            self._sealed.append(seg)
            self._current = None

    def committed(self) -> None:
        """Every row of the sealed segments is in the database: delete them."""
        sealed, self._sealed = self._sealed, []
        for seg in sealed:
            _delete(seg)

    def keep(self) -> None:
        """Rows left the memory buffer: keep every segment so far for the next process to replay."""
        self.seal()
        self._kept += self._sealed
        self._sealed = []

    def _segments(self) -> list[_Segment]:
        """Every segment not deleted yet."""
        return [*self._sealed, *self._kept, *((self._current,) if self._current else ())]

    def sync(self) -> None:
        """``fdatasync`` the segments written since their last sync (blocking: run it on a thread)."""
        for seg in self._segments():
            if seg.lines != seg.synced:
                lines = seg.lines
                try:
                    os.fdatasync(seg.fd)
                except OSError:
                    continue  # closed meanwhile, or the disk is gone: the next write reports it
                seg.synced = lines

    @property
    def pending(self) -> int:
        """Rows in segments not deleted yet."""
        return sum(seg.lines for seg in self._segments())

    @property
    def unsynced(self) -> bool:
        """Some segment holds rows written since its last sync (:meth:`sync` has work to do)."""
        return any(seg.lines != seg.synced for seg in self._segments())

    def close(self, drained: bool) -> None:
        """Release the segments: deleted when ``drained`` (everything is in the database), else kept."""
        self.seal()
        current, self._current = self._current, None
        if current is not None:
            _delete(current)  # nothing in it (seal() took any rows)
        if drained:
            self.committed()
        kept = self._sealed + self._kept
        self._sealed, self._kept = [], []
        rows = sum(seg.lines for seg in kept)
        for seg in kept:
            os.close(seg.fd)  # unlocked: the next process on this directory replays it
        if rows:
            log.warning("ledger: %d requests' rows stay in the journal %s; the next start writes them",
                        rows, self.directory)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _delete(seg: _Segment) -> None:
    """Unlink, then close: the lock is held until the file is gone."""
    try:
        os.unlink(seg.path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("ledger: cannot delete the journal segment %s (%s)", seg.path, exc)
    try:
        os.close(seg.fd)
    except OSError:
        pass
