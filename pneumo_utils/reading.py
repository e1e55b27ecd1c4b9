"""Bounded, checked reads of the files a user hands the project: a model archive, its card, its gate, a profile,
a ``-p`` value.

A hostile or broken file must not exhaust the machine or hang it, and must not end in a traceback. So every
read here first asks what the path *is* (a folder, a FIFO, a device is named as such, never read), bounds its
size before reading it, bounds what a zip archive's members inflate to (a 3 MB ``.keras`` can declare a 3 GiB
``config.json``; Python's zip reader never inflates past a member's declared size, so checking the declared
sizes bounds the memory), parses JSON without a RecursionError on deep nesting, and parses YAML whose aliases
expand to a bounded document (a 600-byte alias bomb expands to gigabytes) and without duplicate keys (the
second ``epochs:`` would silently win).

Every refusal is a :class:`FileRefused` whose message is one line that starts with the path.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import yaml

MEGABYTE = 2**20
CARD_LIMIT = 4 * MEGABYTE  # the committed card is 20 KB
GATE_LIMIT = 64 * MEGABYTE  # the committed gate is 1.4 MB (it inflates to about 3 MB)
MODEL_LIMIT = 1024 * MEGABYTE  # the committed four-member model is 7 MB
ARCHIVE_INFLATED_LIMIT = 1024 * MEGABYTE  # everything a model or gate archive may inflate to, all members
ARCHIVE_MEMBER_LIMIT = {"config.json": 32 * MEGABYTE, "metadata.json": MEGABYTE}
PROFILE_LIMIT = MEGABYTE
VALUE_LIMIT = 64 * 1024  # one -p value


class FileRefused(ValueError):
    """A file (or value) that is not what it must be, or too large to read safely; the message is one line."""


def kind_of(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is not a regular file ("a folder", "a named pipe (FIFO)", ...), "missing" when
    nothing is there, or None for a regular file (symbolic links followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a regular file, else :class:`FileRefused` saying what it is instead."""
    kind = kind_of(path)
    if kind == "missing":
        raise FileRefused(f"{path}: {what} does not exist")
    if kind is not None:
        raise FileRefused(f"{path}: {what} must be a regular file; this is {kind}")
    return Path(path)


def _size_text(size: int) -> str:
    return f"{size / MEGABYTE:,.1f} MB" if size >= MEGABYTE else f"{size:,} bytes"


def read_bytes(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of a regular file no larger than ``limit`` (checked before and while reading: a file that
    grows, or a sparse one, is never read past the limit)."""
    path = require_regular_file(path, what)
    size = os.stat(path).st_size
    if size > limit:
        raise FileRefused(f"{path}: {what} is {_size_text(size)}, more than the {_size_text(limit)} allowed")
    try:
        with open(path, "rb") as handle:
            payload = handle.read(limit + 1)
    except OSError as error:
        raise FileRefused(f"{path}: {what} cannot be read ({error.strerror or error})") from None
    if len(payload) > limit:
        raise FileRefused(f"{path}: {what} grew past the {_size_text(limit)} allowed while it was read")
    return payload


def read_text(path: str | os.PathLike, limit: int, what: str) -> str:
    """A regular file's text (UTF-8, no larger than ``limit``)."""
    payload = read_bytes(path, limit, what)
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRefused(f"{path}: {what} is not UTF-8 text (byte {error.start} cannot be read)") from None


def parse_json(text: str | bytes, source: str | os.PathLike, what: str) -> Any:
    """JSON, with one line for what is not JSON, is not UTF-8 or is nested too deeply to read."""
    try:
        return json.loads(text)
    except RecursionError:
        raise FileRefused(f"{source}: {what} is nested too deeply to be a real one") from None
    except UnicodeDecodeError:
        raise FileRefused(f"{source}: {what} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise FileRefused(f"{source}: {what} is not valid JSON ({error})") from None


def read_json(path: str | os.PathLike, limit: int, what: str) -> Any:
    """A regular file's JSON, bounded by ``limit`` bytes."""
    return parse_json(read_bytes(path, limit, what), path, what)


EXPANDED_LIMIT = 100_000  # values in a settings document, its aliases expanded; the full profile has about 150


class SelfContaining(ValueError):
    """A YAML value that contains itself (``&a [*a]``): it has no finite expansion."""


def expanded_size(value: Any) -> int:
    """How many values ``value`` (parsed YAML) holds with every alias expanded, computed once per shared
    node, so an alias bomb is measured without being expanded; :class:`SelfContaining` for a value that
    contains itself. Profiles, ``-p`` values and sweep grids are all measured with it."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(item: Any) -> int:
        if not isinstance(item, dict | list):
            return 1
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise SelfContaining("a value that contains itself")
        in_progress.add(key)
        children = item.values() if isinstance(item, dict) else item
        sizes[key] = 1 + sum(size(child) for child in children)
        in_progress.discard(key)
        return sizes[key]

    return size(value)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses duplicate keys: the second of two ``epochs:`` lines would otherwise win
    in silence (a ``<<:`` merge's keys may still be overridden, which is what it is for). Aliases are allowed
    (the full profile's second pretrained member reuses the first's settings); what they expand to is
    bounded by :func:`parse_yaml`."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # a key YAML can build but Python cannot hash: the constructor says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str, limit: int = PROFILE_LIMIT, what: str = "the profile") -> Any:
    """YAML settings text (a profile, a ``-p`` value) parsed strictly; one line naming ``source`` otherwise."""
    if len(text) > limit:
        raise FileRefused(f"{source}: {what} is {len(text):,} characters, more than the {limit:,} allowed")
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        values = expanded_size(document)  # aliases are shared objects here: nothing was expanded
    except SelfContaining:
        raise FileRefused(f"{source}: {what} is not valid YAML (a value that contains itself)") from None
    except RecursionError:
        raise FileRefused(f"{source}: {what} is nested too deeply") from None
    except yaml.YAMLError as error:
        problem = str(getattr(error, "problem", None) or "not valid YAML")
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise FileRefused(f"{source}: {what} is not valid YAML ({problem}{where})") from None
    if values > EXPANDED_LIMIT:
        raise FileRefused(
            f"{source}: {what} is not valid YAML (its aliases (*name) expand to more than {EXPANDED_LIMIT:,} values)"
        )
    return document


def check_archive(
    path: str | os.PathLike,
    what: str,
    inflated_limit: int = ARCHIVE_INFLATED_LIMIT,
    member_limits: dict[str, int] | None = None,
    name: str | os.PathLike | None = None,
) -> None:
    """A zip archive (a ``.keras`` model, an ``.npz`` gate) whose members' declared sizes stay within bounds:
    all of them within ``inflated_limit``, and each named member within its own limit. ``path`` may be an open
    file (bytes already read); ``name`` is then the file named in messages."""
    path_text = name if name is not None else path
    member_limits = ARCHIVE_MEMBER_LIMIT if member_limits is None else member_limits
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise FileRefused(f"{path_text}: {what} is not a readable zip archive ({error})") from None
    if len(members) > 10_000:
        raise FileRefused(f"{path_text}: {what} holds {len(members):,} files; a real one holds a handful")
    total = sum(member.file_size for member in members)
    if total > inflated_limit:
        raise FileRefused(
            f"{path_text}: {what} would inflate to {_size_text(total)}, more than the {_size_text(inflated_limit)} "
            "allowed"
        )
    for member in members:
        limit = member_limits.get(member.filename)
        if limit is not None and member.file_size > limit:
            raise FileRefused(
                f"{path_text}: {what}'s {member.filename} would inflate to {_size_text(member.file_size)}, more than "
                f"the {_size_text(limit)} allowed"
            )
