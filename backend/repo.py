"""Everything git: init, the lock, commit-if-changed, and reading past snapshots.

A snapshot is committed with git's plumbing, never by staging files in the work
tree: blobs are written to the object store, a tree is built in a private index,
and HEAD moves by a compare-and-swap `update-ref`. That single ref update is the
commit point. Killed before it, the repository is untouched; killed after it,
the next run only has to check the work tree out again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError
from git.index.fun import read_cache, write_cache
from git.index.typ import IndexEntry
from isal import isal_zlib

from backend.config import mask_url
from backend.errors import LockTimeout, RepoError, SnapshotCorrupt
from backend.layout import MANIFEST, TABLES_DIR, DataFile, Manifest

_ZERO = "0" * 40
_log = logging.getLogger(__name__)
REMOTE = "origin"
_OWNED = (MANIFEST, TABLES_DIR)
#: How far back _settle dates the files it installs: past any racy-git window.
_SETTLED_NS = 5 * 10**9


def init_repo(path: str | os.PathLike[str]) -> SnapshotRepo:
    """Create the snapshot repository if it is missing; open it either way."""
    return SnapshotRepo.open(Path(path), create=True)


class SnapshotRepo:
    """A git repository of snapshots, owned by jsonsnap."""

    def __init__(self, repo: git.Repo) -> None:
        self.repo = repo
        self.path = Path(repo.working_dir)
        self.git_dir = Path(repo.git_dir)

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> SnapshotRepo:
        """Open the repository at exactly `path`; never a parent's repository."""
        try:
            return cls(git.Repo(path, search_parent_directories=False))
        except (InvalidGitRepositoryError, NoSuchPathError):
            if not create:
                raise RepoError(
                    f"{path} is not a snapshot repository; run `jsonsnap init` first"
                ) from None
        if path.exists() and not path.is_dir():
            raise RepoError(f"{path} exists and is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
            return cls(git.Repo.init(path, initial_branch="main"))
        except (OSError, GitCommandError) as exc:
            raise RepoError(f"cannot create a git repository at {path}: {_one_line(exc)}") from None

    def __enter__(self) -> SnapshotRepo:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop git's helper processes (cat-file) that reading blobs keeps running."""
        self.repo.close()

    # --- the lock -----------------------------------------------------------

    @contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold the repository's lock: exports and restores run one at a time.

        flock is released by the kernel when the holder dies, so a run killed
        with -9 never leaves a stale lock behind.
        """
        info = self.git_dir / "jsonsnap.lock"
        fd = os.open(self.git_dir, os.O_RDONLY)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(_holder_message(info, timeout)) from None
                    time.sleep(0.05)
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            info.write_text(json.dumps(holder) + "\n")
            try:
                yield
            finally:
                info.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    # --- reading ------------------------------------------------------------

    def head(self) -> str | None:
        """The commit HEAD points at; None on an unborn branch (no snapshot yet)."""
        return self.rev("HEAD")

    def rev(self, spec: str) -> str | None:
        """The commit id a git revision names, or None."""
        if spec.startswith("-"):
            return None
        try:
            out = self.repo.git.execute(
                [
                    "git",
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    f"{spec}^{{commit}}",
                ]
            )
        except GitCommandError:
            return None
        return str(out).strip() or None

    def history(self) -> Iterator[tuple[str, int]]:
        """(commit, commit time in seconds) along the first-parent line, newest first."""
        for line in self._git("log", "--first-parent", "--format=%H %ct", "HEAD").splitlines():
            commit, seconds = line.split()
            yield commit, int(seconds)

    def log(self) -> Iterator[tuple[str, int, str]]:
        """(commit, commit time, message) along the first-parent line, newest first."""
        if self.head() is None:
            return
        out = self._git("log", "--first-parent", "--format=%H%x1f%ct%x1f%B%x1e", "HEAD")
        for record in out.split("\x1e"):
            if record.strip():
                commit, seconds, body = record.strip("\n").split("\x1f", 2)
                yield commit, int(seconds), body

    def commit_time(self, rev: str) -> dt.datetime:
        seconds = self._git("show", "-s", "--format=%ct", "--end-of-options", rev).strip()
        return dt.datetime.fromtimestamp(int(seconds), dt.UTC)

    def tree_blobs(self, rev: str) -> dict[str, str]:
        """Path -> blob id of every file in the snapshot at `rev`."""
        out = self._git("ls-tree", "-r", "-z", "--full-tree", rev)
        blobs = {}
        for entry in out.split("\0"):
            if entry:
                meta, path = entry.split("\t", 1)
                blobs[path] = meta.split()[2]
        return blobs

    def read_blob(self, sha: str) -> bytes:
        return next(self.read_blobs([sha]))

    def read_blobs(self, shas: list[str]) -> Iterator[bytes]:
        """The blobs' contents, in order, from one `git cat-file --batch` of our own.

        Not GitPython's persistent helper: that one lives until garbage
        collection, and a long-running server would gather them. This process
        ends when the last blob is read, or the reader stops early.
        """
        if not shas:
            return
        process = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=self.path,
            env={**os.environ, "GIT_DIR": str(self.git_dir)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            for sha in shas:
                process.stdin.write(sha.encode("ascii") + b"\n")
                process.stdin.flush()
                header = process.stdout.readline().split()
                if len(header) != 3 or header[1] != b"blob":
                    raise SnapshotCorrupt(f"git object {sha[:10]} is missing or unreadable")
                data = process.stdout.read(int(header[2]))
                process.stdout.read(1)  # the newline after each object
                yield data
        finally:
            process.stdin.close()
            process.stdout.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def read_head_files(
        self, files: list[DataFile], blobs: dict[str, str], vouched: dict[str, StatKey]
    ) -> Iterator[bytes]:
        """HEAD's data files, from the work tree where they are intact, else from git.

        A run starts by putting the work tree back to HEAD, so its files are
        nearly always the snapshot's, and reading them costs far less than
        inflating the objects. A file is trusted as git itself trusts it: when
        the index vouches for it (`vouched_files`); any other is checked
        against the manifest's checksum first.
        """
        for data_file in files:
            try:
                with (self.path / data_file.path).open("rb") as stream:
                    key = _stat_key(os.fstat(stream.fileno()))
                    data = stream.read()
            except OSError:
                key, data = None, b""
            trusted = key is not None and vouched.get(data_file.path) == key
            if not trusted and hashlib.sha256(data).hexdigest() != data_file.sha256:
                data = self.read_blob(blobs[data_file.path])
            yield data

    def vouched_files(self, blobs: dict[str, str]) -> dict[str, StatKey]:
        """Work-tree files the index vouches are HEAD's: path -> their stat data.

        What `git status` relies on: an index entry for HEAD's blob whose stat
        data the file still has, and which is older than the index itself (a
        file as new as the index may have changed within the same tick, so git
        hashes it again, and so does jsonsnap). Recovery has just made the
        index HEAD's, and jsonsnap dates the files it installs back.
        """
        index = self._read_index()
        if index is None:
            return {}  # every file is hashed
        index_seconds, entries = index
        vouched: dict[str, StatKey] = {}
        for path, entry in entries.items():
            if blobs.get(path) == entry.hexsha and entry.mtime[0] < index_seconds:
                vouched[path] = _entry_key(entry)
        return vouched

    def _read_index(self) -> tuple[int, dict[str, IndexEntry]] | None:
        """The index's time (whole seconds) and its stage-0 entries by path, if it can be read."""
        try:
            with (self.git_dir / "index").open("rb") as stream:
                index_seconds = os.fstat(stream.fileno()).st_mtime_ns // 10**9
                entries = read_cache(stream)[1]
        except (OSError, ValueError, struct.error, AssertionError):
            return None  # no index, or one GitPython cannot read
        return index_seconds, {
            os.fspath(path): entry for (path, stage), entry in entries.items() if stage == 0
        }

    def manifest_at(self, rev: str) -> tuple[Manifest, dict[str, str]] | None:
        """The manifest at `rev` with the tree's blob ids, or None before the first snapshot."""
        blobs = self.tree_blobs(rev)
        if MANIFEST not in blobs:
            return None
        return Manifest.from_bytes(self.read_blob(blobs[MANIFEST])), blobs

    # --- the off-site copy ---------------------------------------------------

    def remote_url(self) -> str | None:
        try:
            url = self.repo.git.execute(["git", "remote", "get-url", REMOTE])
        except GitCommandError:
            return None
        return str(url).strip() or None

    def set_remote(self, url: str) -> None:
        verb = "set-url" if self.remote_url() is not None else "add"
        self._git("remote", verb, REMOTE, url)

    def push(self, timeout: float = 300) -> None:
        """Push every snapshot not yet on the remote; never waits for a password."""
        url = self.remote_url()
        if url is None:
            raise RepoError("no remote is set: use `jsonsnap remote set URL`")
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
        try:
            self.repo.git.execute(
                ["git", "push", "--quiet", REMOTE, "HEAD:refs/heads/main"],
                env={**os.environ, **env},
                kill_after_timeout=timeout,
            )
        except GitCommandError as exc:
            raise RepoError(f"push to {mask_url(url)} failed: {_one_line(exc)}") from None

    def fsck(self) -> list[str]:
        """What `git fsck` finds wrong with the object store; empty when it is sound."""
        try:
            self.repo.git.execute(["git", "fsck", "--no-progress", "--no-dangling", "--strict"])
        except GitCommandError as exc:
            text = str(exc.stderr or exc.stdout or exc)
            return [line.strip() for line in text.splitlines() if line.strip()][-5:]
        return []

    # --- writing ------------------------------------------------------------

    def recover(self) -> None:
        """Undo whatever an interrupted run left behind: staging, index, work tree."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self._index_file.unlink(missing_ok=True)
        if self.head() is not None:
            self.reset_work_tree()
        self._git("clean", "-fdq", "--", *_OWNED)

    def reset_work_tree(self) -> None:
        """The work tree and index as at HEAD, missing files checked out again.

        `git reset --hard` without its side effect: it would leave ORIG_HEAD behind.
        """
        self._git("read-tree", "--reset", "-u", "HEAD")

    @property
    def staging_dir(self) -> Path:
        return self.git_dir / "jsonsnap-staging"

    @property
    def _index_file(self) -> Path:
        return self.git_dir / "jsonsnap-index"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch folder inside .git: nothing in it is ever seen as a change."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir()
        try:
            yield self.staging_dir
        finally:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def blob_store(self, head: str | None) -> BlobStore:
        """Stores files in the background as they are finished, for a commit on
        top of `head` (HEAD as the caller read it under the lock); see BlobStore."""
        return BlobStore(self, head)

    def store_files(self, files: list[Path]) -> list[str]:
        """Write files into the object store, returning their blob ids, in one git call."""
        if not files:
            return []
        listing = self.staging_dir / "store-paths"
        listing.write_text("".join(f"{f}\n" for f in files))
        with listing.open("rb") as stdin:
            out = self._git("hash-object", "-w", "--no-filters", "--stdin-paths", stdin=stdin)
        return out.split()

    def commit(
        self,
        blobs: dict[str, str],
        message: str,
        when: dt.datetime,
        author: tuple[str, str],
        files: dict[str, Path],
        *,
        previous: dict[str, str],
    ) -> str | None:
        """Commit exactly `blobs` (path -> blob id) as the new tree, if it differs from HEAD.

        `files` holds a local file with the exact content of each blob that
        HEAD does not have; they become the work tree's files. `previous` is
        HEAD's tree (path -> blob id), as the caller read it under the lock.
        """
        head = self.head()
        env = {"GIT_INDEX_FILE": str(self._index_file)}
        self._index_file.unlink(missing_ok=True)
        listing = self.staging_dir / "index-info"
        listing.write_bytes(
            b"".join(f"100644 {sha}\t{path}\0".encode() for path, sha in sorted(blobs.items()))
        )
        with listing.open("rb") as stdin:
            self._git("update-index", "-z", "--add", "--index-info", stdin=stdin, env=env)
        tree = self._git("write-tree", env=env).strip()
        self._index_file.unlink(missing_ok=True)
        if head is not None and tree == self._git("rev-parse", f"{head}^{{tree}}").strip():
            return None
        stamp = f"{int(when.timestamp())} +0000"
        name, email = author
        commit_env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_COMMITTER_DATE": stamp,
        }
        parents = ["-p", head] if head else []
        msg_file = self.staging_dir / "message"
        msg_file.write_text(message + "\n")
        commit = self._git(
            "commit-tree", "--no-gpg-sign", tree, *parents, "-F", str(msg_file), env=commit_env
        ).strip()
        self._git("update-ref", "-m", message.splitlines()[0], "HEAD", commit, head or _ZERO)
        try:
            self._check_out(previous, blobs, files)
        except OSError:
            self.reset_work_tree()
        self._pack_if_due()
        return commit

    def _pack_if_due(self) -> None:
        """`git gc --auto`, which plumbing never triggers as `git commit` does.

        A nightly snapshot adds thousands of loose objects a week. Packed inside
        the lock, never in the background, so no later run races it; a failure
        here costs disk space, not the snapshot already committed.
        """
        no_detach = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "gc.autoDetach"}
        try:
            self._git("gc", "--auto", "--quiet", env={**no_detach, "GIT_CONFIG_VALUE_0": "false"})
        except RepoError as exc:
            _log.warning("snapshot committed, but packing the repository failed: %s", exc)

    def _check_out(self, old: dict[str, str], new: dict[str, str], files: dict[str, Path]) -> None:
        """The work tree and index of the new commit, without reading one object back.

        The staged files are the blobs' exact bytes, so they are moved into
        place, and the index is written with their stat data: git then sees a
        clean tree without checking out or hashing hundreds of megabytes again,
        as `git reset --hard` would. recover() checks out after a crash instead.
        """
        for path, blob in new.items():
            if old.get(path) != blob:
                target = self.path / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(files[path], target)
                _settle(target)
        for path in old.keys() - new.keys():
            target = self.path / path
            target.unlink(missing_ok=True)
            for parent in target.parents:
                if parent == self.path or any(parent.iterdir()):
                    break
                parent.rmdir()
        # A file this commit did not change keeps the entry recovery wrote for
        # it: stat data taken now would vouch for whatever the file holds now,
        # and a file changed during the run must still show as changed.
        index = self._read_index()
        current = index[1] if index else {}
        entries = []
        for path in sorted(new):
            entry = current.get(path)
            if old.get(path) != new[path] or entry is None or entry.hexsha != new[path]:
                entry = _index_entry(self.path / path, path, new[path])
            entries.append(entry)
        # Written aside and renamed over: never through index.lock, which a
        # kill at the wrong moment would leave behind to block every later run.
        with self._index_file.open("wb") as stream:
            write_cache(entries, stream)
        os.replace(self._index_file, self.git_dir / "index")

    def _git(
        self, *args: str, stdin: BinaryIO | None = None, env: dict[str, str] | None = None
    ) -> str:
        try:
            out: str = self.repo.git.execute(
                ["git", *args],
                istream=stdin,
                env={**os.environ, **(env or {})},
                strip_newline_in_stdout=False,
            )
        except GitCommandError as exc:
            raise RepoError(f"git {args[0]} failed: {_one_line(exc)}") from None
        return out


class BlobStore:
    """Writes finished data files into the object store, one call per file.

    Compressing the objects is most of the cost of a commit; called on a
    worker thread while the export goes on reading (see export's _Beside), it
    overlaps with the database and the row encoding (the compressors and
    hashlib release the GIL). A loose object is git's documented format:
    zlib("blob <size>\\0" + content), named by the SHA-1 of those bytes. Each
    goes through a temporary file in the staging folder and a rename, as git
    writes them: a killed run leaves no partial object, at worst whole ones
    nothing refers to, which `git gc` prunes. A repository with another object
    format gets its objects from `git hash-object` at commit time instead.
    """

    def __init__(self, repo: SnapshotRepo, head: str | None) -> None:
        self.repo = repo
        self.head = head
        self.objects = repo.git_dir / "objects"
        reader = repo.repo.config_reader()
        self.enabled = reader.get_value("extensions", "objectformat", "sha1") == "sha1"
        level = reader.get_value("core", "compression", zlib.Z_BEST_SPEED)
        self.deflate = _deflate(int(reader.get_value("core", "loosecompression", level)))
        self.blobs: dict[str, str] = {}
        self.created: list[Path] = []

    def write(self, path: str, local: Path) -> None:
        """Stores `local` as the blob for repo path `path` (a no-op where not enabled)."""
        if not self.enabled:
            return
        obj = _read_as_blob(local)
        blob_id = hashlib.sha1(obj, usedforsecurity=False).hexdigest()
        target = self.objects / blob_id[:2] / blob_id[2:]
        if not target.exists():
            body = self.deflate(obj)
            target.parent.mkdir(exist_ok=True)
            temporary = self.repo.staging_dir / f"object-{blob_id}-{threading.get_ident()}"
            temporary.write_bytes(body)
            temporary.chmod(0o444)
            os.replace(temporary, target)
            self.created.append(target)
        self.blobs[path] = blob_id

    def stored(self) -> dict[str, str]:
        """Repo path -> blob id of every file written so far."""
        return dict(self.blobs)

    def close(self, *, failed: bool = False) -> None:
        """After a run that failed before its commit, removes the objects it
        wrote, so the repository is exactly as it was."""
        if failed and self.repo.head() == self.head:
            for target in self.created:
                target.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    target.parent.rmdir()  # only if this run made the fan-out folder


def _read_as_blob(local: Path) -> bytearray:
    """The file as git's blob object, "blob <size>\\0" and the content, read
    straight into one buffer: the one-shot compressor needs it whole, and a
    second copy of a large shard would cost memory."""
    with local.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        header = b"blob %d\0" % size
        obj = bytearray(len(header) + size)
        obj[: len(header)] = header
        if stream.readinto(memoryview(obj)[len(header) :]) != size:
            raise OSError(f"{local} changed while it was being stored")
    return obj


def _deflate(level: int) -> Callable[[bytearray], bytes]:
    """The compressor of loose objects at git's zlib `level`.

    Git's default for loose objects is level 1, the fastest. There, ISA-L's
    deflate makes objects of the same size four times faster than zlib (measured
    on snapshot shards: 1 GB/s against 230 MB/s), and compression is the largest
    part of a commit. Its stream is ordinary zlib, which every git reads. A
    level the user chose (core.compression, core.looseCompression) is zlib's own.
    An object is compressed in one call: ISA-L's streaming mode compresses a
    small input badly when it arrives in pieces (16 KB became 8 KB, not 0.8).
    """
    if level == zlib.Z_BEST_SPEED:
        return functools.partial(isal_zlib.compress, level=1)
    return functools.partial(zlib.compress, level=level)


#: The stat data an index entry keeps of its file and git compares: size,
#: mtime and ctime (seconds, nanoseconds), inode, device, owner and group, as
#: git truncates them to 32 bits.
StatKey = tuple[int, ...]
_U32 = 0xFFFFFFFF


def _stat_key(stat: os.stat_result) -> StatKey:
    return (
        stat.st_size & _U32,
        *divmod(stat.st_mtime_ns, 10**9),
        *divmod(stat.st_ctime_ns, 10**9),
        stat.st_ino & _U32,
        stat.st_dev & _U32,
        stat.st_uid & _U32,
        stat.st_gid & _U32,
    )


def _entry_key(entry: IndexEntry) -> StatKey:
    return (
        entry.size & _U32,
        *entry.mtime,
        *entry.ctime,
        entry.inode & _U32,
        entry.dev & _U32,
        entry.uid & _U32,
        entry.gid & _U32,
    )


def _settle(path: Path) -> None:
    """Dates a file this run wrote a few seconds back, before the index records its stat.

    Git distrusts the stat data of a file as new as the index itself ("racy
    git") and hashes it again at the next status or checkout: after a nightly
    export, hundreds of megabytes, at the start of the next run. The file holds
    its blob's bytes exactly, so an older time is true to its content; any later
    change gives it a new time, which git sees.
    """
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - _SETTLED_NS))


def _index_entry(local: Path, path: str, blob: str) -> IndexEntry:
    """An index entry for a file whose content is `blob`, with the stat data git compares."""
    st = local.stat()

    def stamp(ns: int) -> bytes:
        return struct.pack(">LL", (ns // 10**9) & _U32, ns % 10**9)

    return IndexEntry(
        (
            0o100644,
            bytes.fromhex(blob),
            0,
            path,
            stamp(st.st_ctime_ns),
            stamp(st.st_mtime_ns),
            st.st_dev & _U32,
            st.st_ino & _U32,
            st.st_uid & _U32,
            st.st_gid & _U32,
            st.st_size & _U32,
        )
    )


def _holder_message(info: Path, timeout: float) -> str:
    try:
        holder: dict[str, Any] = json.loads(info.read_text())
        who = f"since {holder['since']} (pid {holder['pid']} on {holder['host']})"
    except (OSError, ValueError, KeyError):
        who = "(holder unknown)"
    return f"another jsonsnap run holds the repository lock {who}; gave up after {timeout:g}s"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, GitCommandError):
        text = str(exc.stderr or exc).strip().removeprefix("stderr:").strip(" '")
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # git's own verdict ("fatal: ...", "error: ...", " ! [rejected] ...") beats
    # the hints and context lines around it.
    verdicts = [line for line in lines if line.startswith(("fatal:", "error:", "!"))]
    return (verdicts or lines or [type(exc).__name__])[0]
