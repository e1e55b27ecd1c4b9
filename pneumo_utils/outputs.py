"""One way to write a result: atomic or exclusive creation, ``--overwrite``, a folder lock, clear errors.

Every command writes through these helpers, so the same promises hold everywhere:

- a result appears whole or not at all (written to a uniquely named temporary file in the same folder,
  then renamed; two writers never share a temporary name, and no temporary file survives an error);
- without ``overwrite`` an existing result is never replaced, and the check is made *at the moment of
  writing* (``os.link`` of the finished temporary file fails if the name exists), so of two processes
  racing for one name exactly one wins and the other stops with a clear line;
- a missing parent folder is created; a write that fails (a directory in the way, a file where a folder
  should be, no permission, full disk, a name the file system refuses) raises :class:`OutputError` with
  one line naming the path and the problem;
- a run folder is locked while a run writes into it (:class:`FolderLock`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".pneumo.lock"
_UMASK = os.umask(0)
os.umask(_UMASK)

_PROBLEMS = {
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "a part of the path is a file, not a folder",  # only making the parent folders can raise it
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.EILSEQ: "the file system refuses this file name",
}


class OutputError(OSError):
    """A result could not be written; the message is one line naming the path and the problem."""


class OutputExists(OutputError):
    """The result exists and ``overwrite`` was not given (or another process created it first)."""


class FolderBusy(OutputError):
    """Another live process holds the folder's lock."""


class CommittedOutput(OutputError):
    """An output inside the committed ``saved_models/`` or ``results/``: only ``pneumo promote`` changes those."""


_PROJECT = Path(__file__).resolve().parents[1]
COMMITTED = (_PROJECT / "saved_models", _PROJECT / "results")
# the lab notebook's own records: `pneumo train` adds an experiment, `pneumo experiments` writes its tables
EXPERIMENT_RECORDS = (
    _PROJECT / "results" / "experiments",
    _PROJECT / "results" / "experiments.md",
    _PROJECT / "results" / "experiments.csv",
    _PROJECT / "results" / "experiments_views.csv",
    _PROJECT / "results" / "experiments_test_dev.csv",
)


def _resolved(path: str | os.PathLike) -> Path:
    """``path`` with symbolic links and ``..`` resolved, also where it does not exist yet."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def refuse_committed(path: str | os.PathLike, flag: str, allowed: tuple[Path, ...] = ()) -> None:
    """Refuse an output inside ``saved_models/`` or ``results/`` (also through ``..`` or a symbolic link),
    except in ``allowed`` (a folder and everything in it, or one file)."""
    target = _resolved(path)
    for folder in COMMITTED:
        if target == folder or target.is_relative_to(folder):
            if any(target == place or target.is_relative_to(place) for place in allowed):
                return
            raise CommittedOutput(
                f"{display(path)}: {flag} points inside {folder.name}/, which holds the committed "
                "model and results; only `pneumo promote RUN_DIR` changes it (write to runs/ "
                "or elsewhere)"
            )


def is_plain_name(name: str) -> bool:
    """Letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit, at most 100 characters, no ``..``:
    a name that cannot be a path (a run, an experiment, a model file)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name or "")) and ".." not in name


def check_name(name: str, flag: str = "--name") -> str:
    """A name given on the command line is a name, not a path (:func:`is_plain_name`)."""
    if not is_plain_name(name):
        raise CommittedOutput(
            f"{flag} {name!r}: must be a plain name (letters, digits, '.', '_', '-'; no '/' "
            "or '..', at most 100 characters)"
        )
    return name


def finite(value: Any) -> Any:
    """NaN and infinity become null: strict JSON has no NaN, and "not measurable" is what they mean here."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return finite(value.item())
    return value


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def spreadsheet_safe_csv(frame) -> bytes:
    """A table as CSV whose text cells cannot run as spreadsheet formulas: a cell that begins with one of
    :data:`FORMULA_LEADS` (a file named ``=cmd|' /C calc'!A0``) gets a leading apostrophe, which a spreadsheet
    shows as text (OWASP's advice for CSV injection). Numbers are left as they are; the JSON output keeps
    every name exactly."""
    safe = frame.copy()
    for column in safe.columns:
        values = safe[column].tolist()
        if any(isinstance(value, str) for value in values):  # text columns (object or string dtype)
            safe[column] = [
                f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_LEADS) else value for value in values
            ]
    return safe.to_csv(index=False).encode("utf-8")


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first meaningful line of an error (or text), without terminal colour codes, at most ``limit``
    characters; the error's type name when it has no message. Every one-line error message uses this."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        return lines[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def describe(error: OSError) -> str:
    """A short phrase for an OS error: "no space left on the device", "permission denied", ..."""
    if isinstance(error, UnicodeError):
        return "the file name is not valid for this file system"
    return _PROBLEMS.get(getattr(error, "errno", None), (error.strerror or str(error)).lower())


def display(path: str | os.PathLike) -> str:
    """A path for a message, printable even when the name is not valid UTF-8."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")  # undecodable bytes as \xNN


def refuse_existing(path: str | os.PathLike, overwrite: bool, what: str = "file") -> None:
    """Stop early (before any work) when ``path`` exists and may not be replaced. The final write checks
    again, atomically; this early check only saves the user from waiting for a refusal."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and what == "file":
        raise OutputError(f"{display(path)}: cannot write, it is a folder")
    if path.exists() and not overwrite:
        raise OutputExists(f"{display(path)}: already exists; pass --overwrite to replace it")


def write_bytes(path: str | os.PathLike, payload: bytes, overwrite: bool = True) -> Path:
    """Write ``payload`` to ``path`` whole or not at all; with ``overwrite=False`` never replace a file."""
    path = Path(path)
    temporary = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if path.exists() and not path.is_file():  # a device or a pipe is never replaced by a result
            raise OutputError(f"{display(path)}: cannot write, it is not a regular file")
        path.parent.mkdir(parents=True, exist_ok=True)  # a missing output folder is made, as --output-dir is
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
        os.fchmod(handle, 0o666 & ~_UMASK)  # mkstemp makes 0600; a result gets the usual permissions
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if the name exists: the no-replace check at write time
            except FileExistsError:
                raise OutputExists(
                    f"{display(path)}: already exists (written by another process meanwhile); "
                    "nothing was replaced; pass --overwrite to replace it"
                ) from None
            os.unlink(temporary)
        temporary = None
    except OutputError:
        raise
    except (OSError, UnicodeError) as error:
        raise OutputError(f"{display(path)}: cannot write ({describe(error)})") from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite)


def json_bytes(payload: Any) -> bytes:
    """The project's JSON: strict (NaN and infinity as null), indented, UTF-8, ending in a newline."""
    return (json.dumps(finite(payload), indent=2, default=str, allow_nan=False) + "\n").encode()


def write_json(path: str | os.PathLike, payload: Any, overwrite: bool = True) -> Path:
    """Strict JSON (:func:`json_bytes`), written as :func:`write_bytes` does."""
    return write_bytes(path, json_bytes(payload), overwrite)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


UNREADABLE_LOCK_AGE_S = 10.0  # a lock file is filled in microseconds after it is created


class FolderLock:
    """An exclusive lock on a run folder: ``folder/.pneumo.lock`` holds the owner's pid, host and start.

    A second writer stops at once with :class:`FolderBusy` naming the holder. A lock left by a process
    that no longer exists (same host) is stale: it is taken over, with a note in ``taken_over``. With
    ``reclaim_same_purpose`` a lock whose holder had the very same purpose is taken over from any host:
    a scheduler that retries a run after losing its worker knows that attempt is gone.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "a pneumo run", reclaim_same_purpose: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self.reclaim_same_purpose = reclaim_same_purpose
        self.taken_over: dict[str, Any] | None = None

    def acquire(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{display(self.folder)}: cannot create the output folder ({describe(error)})") from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                same_host_gone = (
                    holder and holder.get("host") == record["host"] and not _pid_alive(int(holder.get("pid", -1)))
                )
                reclaimed = holder and self.reclaim_same_purpose and holder.get("purpose") == self.purpose
                if same_host_gone or reclaimed or (holder is None and self._age() > UNREADABLE_LOCK_AGE_S):
                    # an unreadable lock older than a writer needs to fill it in was left by a killed process
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    self.taken_over = holder
                    continue
                who = (
                    f"pid {holder.get('pid')}, {holder.get('purpose')}, since {holder.get('started')}"
                    if holder
                    else f"a lock being written or unreadable; if no pneumo command uses it, delete {LOCK_NAME}"
                )
                raise FolderBusy(
                    f"{display(self.folder)}: in use by another process ({who}); wait for it to "
                    f"finish or choose another output folder"
                ) from None
            except OSError as error:
                raise OutputError(f"{display(self.path)}: cannot create the lock ({describe(error)})") from None
            with os.fdopen(handle, "w") as stream:
                json.dump(record, stream)
            return self
        raise FolderBusy(f"{display(self.folder)}: the lock changed hands while taking it over; try again")

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def release(self) -> None:
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def save_or_rescue(path: str | os.PathLike, payload: bytes, overwrite: bool) -> tuple[Path, str | None]:
    """Write a finished result; if that fails, keep the work: it goes to a new file in the temporary
    folder instead. Returns ``(where it is, None)`` or ``(where it is, one-line problem)``."""
    try:
        return write_bytes(path, payload, overwrite), None
    except OutputError as error:
        name = Path(os.fsdecode(os.fspath(path))).name.encode("ascii", "replace").decode() or "result"
        rescue = Path(tempfile.mkdtemp(prefix="pneumo-rescued-")) / name.replace("?", "_")
        rescue.write_bytes(payload)
        return rescue, f"{error}; the result was saved to {rescue} instead"


JOURNAL_NAME = ".promote-journal.json"  # beside the committed model while a promote swaps files


class Journal:
    """What a ``pneumo promote`` is doing to the committed folders, written before each step, so that a promote
    killed at any instant (SIGKILL, power) is finished or undone by the next command instead of leaving a new
    model beside an old card.

    Each entry is a target with its staged new copy (``stage``; None for a file the promote removes) and the
    name its old copy is kept under (``old``; None where there was none). ``state`` is ``staging`` (new copies
    being written), ``swapping`` (targets being replaced) or ``done`` (all replaced; the old copies may go).
    :meth:`recover` completes a ``done`` journal and rolls back any other, from what is on disk: an old copy
    still there is put back, a new file that had no old one is removed, and every staged copy is deleted."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def write(self, state: str, entries: list[dict[str, Any]]) -> None:
        write_json(self.path, {"state": state, "pid": os.getpid(), "entries": entries})

    def recover(self) -> str | None:
        """Finish or undo a promote that stopped midway; what was done ("completed", "rolled back") or None."""
        if not self.path.exists():
            return None
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            entries, state = record["entries"], record["state"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise OutputError(
                f"{display(self.path)}: a promote's journal that cannot be read ({error}); check saved_models/ and "
                "results/ with git status, then delete it"
            ) from None
        if state == "done":
            for entry in entries:
                if entry.get("old"):
                    Path(entry["old"]).unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
            return "completed"
        for entry in reversed(entries):
            target = Path(entry["target"])
            stage = Path(entry["stage"]) if entry.get("stage") else None
            old = Path(entry["old"]) if entry.get("old") else None
            if old is not None:
                if old.exists():
                    os.replace(old, target)  # the old file back, whether or not the new one was swapped in
            elif stage is not None and not stage.exists() and target.exists() and state == "swapping":
                target.unlink()  # a file the promote added (it had no old copy) and had swapped in
            if stage is not None:
                stage.unlink(missing_ok=True)
                for partial in stage.parent.glob(f".{stage.name[:100]}.*.tmp"):  # a stage killed while written
                    partial.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        return "rolled back"


def recover_promote(folder: str | os.PathLike) -> str | None:
    """Finish or undo a promote of the committed folder ``folder`` that stopped midway (its journal is still
    there), under the folder's lock: a promote still running is left alone (:class:`FolderBusy`)."""
    journal = Journal(Path(folder) / JOURNAL_NAME)
    if not journal.path.exists():
        return None
    lock = FolderLock(folder, purpose="pneumo promote").acquire()
    try:
        return journal.recover()
    finally:
        lock.release()
