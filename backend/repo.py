"""Everything git: init, the lock, commit-if-changed, and reading past snapshots.

A snapshot is committed with git's plumbing, never by staging files in the work
tree: blobs are written to the object store, a tree is built in a private index,
and HEAD moves by a compare-and-swap `update-ref`. That single ref update is the
commit point. Killed before it, the repository is untouched; killed after it,
the next run only has to check the work tree out again.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from backend.config import mask_url
from backend.errors import LockTimeout, RepoError, SnapshotCorrupt
from backend.layout import MANIFEST, TABLES_DIR, Manifest

_ZERO = "0" * 40
REMOTE = "origin"
_OWNED = (MANIFEST, TABLES_DIR)


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
            self._git("reset", "-q", "--hard")
        self._git("clean", "-fdq", "--", *_OWNED)

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
        self, blobs: dict[str, str], message: str, when: dt.datetime, author: tuple[str, str]
    ) -> str | None:
        """Commit exactly `blobs` (path -> blob id) as the new tree, if it differs from HEAD."""
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
        self._git("reset", "-q", "--hard")
        return commit

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
