import hashlib
import json
import os
import re
import time
import zlib

import pytest
from conftest import engine_for, execute, git, loose_object, run, work_tree
from git.index.fun import read_cache, write_cache
from git.index.typ import IndexEntry

from backend import codec, layout, writer
from backend.export import HeadState, Selection, export_snapshot, read_database
from backend.layout import split_rows, table_stem
from backend.repo import SnapshotRepo

STAMPS = [f"2026-11-{day:02d}T02:00:00Z" for day in range(1, 29)]
SAFE_STEM = re.compile(r"[a-z0-9_]{1,100}|[a-z0-9_]{1,60}~[0-9a-f]{12}")

EDGE_NAMES = [
    "../x",
    "a/b",
    "Odd Name",
    "Users",
    "users",
    "Élève",
    "eleve",
    "con",
    "CON",
    "com1",
    "lpt9",
    "..",
    ".",
    "",
    "a b",
    "a_b",
    "a-b",
    "a.b",
    "x~1",
    "~",
    "/",
    "\\..\\x",
    "名前",
    "a" * 100,
    "a" * 101,
    "a" * 101 + "b",
    "users\x00",
]


@pytest.mark.parametrize("name", EDGE_NAMES)
def test_stem_is_a_safe_lower_case_file_name(name):
    stem = table_stem(name)
    assert SAFE_STEM.fullmatch(stem), stem
    assert "/" not in stem
    assert ".." not in stem
    assert stem == stem.lower()


def test_stems_never_collide_even_case_insensitively():
    stems = [table_stem(name) for name in EDGE_NAMES]
    assert len({s.casefold() for s in stems}) == len(EDGE_NAMES)


@pytest.mark.parametrize("name", ["users", "material_tags", "t1", "_", "a" * 100, "2024_x"])
def test_plain_lower_case_name_is_kept(name):
    assert table_stem(name) == name


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("Users", "users~"),
        ("Odd Name", "odd_name~"),
        ("Élève", "eleve~"),
        ("con", "con~"),
        ("../x", "x~"),
        ("..", "table~"),
        ("", "table~"),
        ("a/b", "a_b~"),
    ],
)
def test_other_names_get_a_readable_slug_and_hash(name, prefix):
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    assert table_stem(name) == prefix + digest


def test_stem_of_name_with_trailing_newline_is_hashed():
    assert table_stem("users\n") == "users~" + hashlib.sha256(b"users\n").hexdigest()[:12]


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def paths_outside(root, repo):
    return {p for p in root.rglob("*") if repo not in p.parents and p != repo}


def test_odd_table_names_stay_inside_tables_folder(db_url, tmp_path, repo_path):
    names = ["../x", "a/b", "Odd Name", "UPPER", "Élève", "con", "..", "a b", "a_b"]
    if db_url.startswith("postgresql"):
        names.append("upper")  # SQLite table names are case-insensitive
    execute(
        db_url,
        *[f"CREATE TABLE {quote(n)} (id int PRIMARY KEY, v varchar(20))" for n in names],
        *[f"INSERT INTO {quote(n)} VALUES (1, '{n}')" for n in names],
    )
    before = paths_outside(tmp_path, repo_path)
    result = run("export", "--db", db_url, "--repo", str(repo_path), "--timestamp", STAMPS[0])
    assert result.exit_code == 0, result.output
    assert paths_outside(tmp_path, repo_path) == before
    top = sorted(p.name for p in repo_path.iterdir())
    assert top == [".git", "README.md", "manifest.json", "tables"]
    written = sorted(p.name for p in (repo_path / "tables").iterdir())
    assert all((repo_path / "tables" / f).is_file() for f in written)
    manifest = json.loads((repo_path / "manifest.json").read_bytes())
    files = {name: entry["file"] for name, entry in manifest["tables"].items()}
    assert files == {n: f"tables/{table_stem(n)}.json" for n in names}
    assert sorted(f.removeprefix("tables/") for f in files.values()) == written
    assert files["a_b"] == "tables/a_b.json"
    assert files["UPPER"].startswith("tables/upper~")
    for name, path in files.items():
        assert json.loads((repo_path / path).read_bytes()) == [{"id": 1, "v": name}]
    assert git(repo_path, "ls-files").splitlines() == sorted(
        ["README.md", "manifest.json", *files.values()]
    )


def rebuild(rows):
    return b"[\n" + b",\n".join(rows) + b"\n]\n"


def test_split_rows_gives_back_each_row_exactly(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(40), j json)",
        """INSERT INTO t VALUES (1, 'a\n  },\n  {', '{"o": {"p": [{"q": 1}, {}]}}'),"""
        """ (2, '}', '[{"x": {}}]'), (3, NULL, NULL)""",
    )
    assert run("export", "--db", sqlite_url, "--repo", str(repo_path)).exit_code == 0
    data = (repo_path / "tables" / "t.json").read_bytes()
    rows = split_rows(data)
    assert rebuild(rows) == data
    assert rows == [codec.pretty_row(row) for row in json.loads(data)]
    assert [json.loads(row) for row in rows] == [
        {"id": 1, "j": {"o": {"p": [{"q": 1}, {}]}}, "v": "a\n  },\n  {"},
        {"id": 2, "j": [{"x": {}}], "v": "}"},
        {"id": 3, "j": None, "v": None},
    ]


def test_split_rows_of_one_row_file(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (7)")
    assert run("export", "--db", sqlite_url, "--repo", str(repo_path)).exit_code == 0
    data = (repo_path / "tables" / "t.json").read_bytes()
    assert data == b'[\n  {\n    "id": 7\n  }\n]\n'
    assert split_rows(data) == [b'  {\n    "id": 7\n  }']


def test_split_rows_of_an_empty_table_file_is_empty(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    assert run("export", "--db", sqlite_url, "--repo", str(repo_path)).exit_code == 0
    assert split_rows((repo_path / "tables" / "t.json").read_bytes()) == []


# --- shards -------------------------------------------------------------------


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(layout, "SHARD_MIN_ROWS", 20)
    monkeypatch.setattr(layout, "SHARD_MEAN_ROWS", 8)


def cut_name(key):
    """The cut rule of snapshots/README.md, written out apart from the code under test."""
    encoded = codec.canonical([key])
    spread = (zlib.crc32(encoded) * 0x9E3779B97F4A7C15) % 2**64
    if spread * layout.SHARD_MEAN_ROWS >= 2**64 - 1:
        return None
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


def is_cut(key):
    return cut_name(key) is not None


def expected_shards(ids):
    groups = []
    for key in sorted(ids):
        name = cut_name(key)
        if name or not groups:
            groups.append((f"tables/t/{name or 'first'}.json", []))
        groups[-1][1].append(key)
    return groups


def shard_of(ids, key):
    return next(path for path, keys in expected_shards(ids) if key in keys)


class Db:
    def __init__(self, url, repo):
        self.url, self.repo, self.exports = url, repo, 0

    def export(self):
        stamp = STAMPS[self.exports]
        self.exports += 1
        return run("export", "--db", self.url, "--repo", str(self.repo), "--timestamp", stamp)

    def manifest(self):
        return json.loads((self.repo / "manifest.json").read_bytes())["tables"]["t"]

    def changed_files(self):
        return git(self.repo, "diff", "--name-only", "HEAD~1", "--", "tables").splitlines()


@pytest.fixture
def sharded(db_url, repo_path, small_shards):
    ids = list(range(2, 122, 2))  # 60 rows, gaps for inserts
    execute(
        db_url,
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "INSERT INTO t VALUES " + ", ".join(f"({i}, 'row {i}')" for i in ids),
    )
    db = Db(db_url, repo_path)
    assert db.export().exit_code == 0
    return db, ids


def test_large_table_is_split_into_shards_in_key_order(sharded):
    db, ids = sharded
    entry = db.manifest()
    groups = expected_shards(ids)
    assert len(groups) > 3
    assert "file" not in entry
    assert "sha256" not in entry
    assert entry["rows"] == 60
    assert [s["file"] for s in entry["shards"]] == [path for path, _ in groups]
    for shard, (path, keys) in zip(entry["shards"], groups, strict=True):
        data = (db.repo / path).read_bytes()
        assert shard["rows"] == len(keys)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert [r["id"] for r in json.loads(data)] == keys
    on_disk = sorted(f"tables/t/{p.name}" for p in (db.repo / "tables" / "t").iterdir())
    assert on_disk == sorted(path for path, _ in groups)
    assert not (db.repo / "tables" / "t.json").exists()
    rows = [r for s in entry["shards"] for r in json.loads((db.repo / s["file"]).read_bytes())]
    assert rows == [{"id": i, "v": f"row {i}"} for i in ids]


def test_inserting_a_row_changes_only_its_shard(sharded):
    db, ids = sharded
    key = next(k for k in range(61, 121, 2) if not is_cut(k))
    execute(db.url, f"INSERT INTO t VALUES ({key}, 'new')")
    result = db.export()
    assert result.exit_code == 0, result.output
    assert db.changed_files() == [shard_of([*ids, key], key)]
    assert git(db.repo, "log", "-1", "--format=%s") == f"snapshot {STAMPS[1]}: t +1\n"


def test_inserting_a_cut_row_changes_two_shards(sharded):
    db, ids = sharded
    key = next(k for k in range(41, 121, 2) if is_cut(k))
    execute(db.url, f"INSERT INTO t VALUES ({key}, 'new')")
    assert db.export().exit_code == 0
    new_ids = [*ids, key]
    assert db.changed_files() == sorted({shard_of(ids, key - 1), shard_of(new_ids, key)})
    assert shard_of(new_ids, key) == f"tables/t/{cut_name(key)}.json"


def test_deleting_a_row_changes_only_its_shard(sharded):
    db, ids = sharded
    key = next(k for k in ids[30:] if not is_cut(k))
    execute(db.url, f"DELETE FROM t WHERE id = {key}")
    result = db.export()
    assert result.exit_code == 0, result.output
    assert db.changed_files() == [shard_of(ids, key)]
    assert git(db.repo, "log", "-1", "--format=%s") == f"snapshot {STAMPS[1]}: t -1\n"


def test_deleting_a_cut_row_merges_two_shards(sharded):
    db, ids = sharded
    key = next(k for k in ids[10:] if is_cut(k))
    execute(db.url, f"DELETE FROM t WHERE id = {key}")
    assert db.export().exit_code == 0
    assert db.changed_files() == sorted({shard_of(ids, key - 2), shard_of(ids, key)})
    assert not (db.repo / shard_of(ids, key)).exists()


def test_changing_a_row_changes_only_its_shard(sharded):
    db, ids = sharded
    execute(db.url, "UPDATE t SET v = 'changed' WHERE id = 60")
    result = db.export()
    assert result.exit_code == 0, result.output
    assert db.changed_files() == [shard_of(ids, 60)]
    assert git(db.repo, "log", "-1", "--format=%s") == f"snapshot {STAMPS[1]}: t ~1\n"


def test_table_shrinking_under_threshold_goes_back_to_single_file(sharded):
    db, _ = sharded
    execute(db.url, "DELETE FROM t WHERE id > 40")
    result = db.export()
    assert result.exit_code == 0, result.output
    entry = db.manifest()
    assert "shards" not in entry
    assert entry["file"] == "tables/t.json"
    assert entry["rows"] == 20
    data = (db.repo / "tables" / "t.json").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert [r["id"] for r in json.loads(data)] == list(range(2, 42, 2))
    assert not (db.repo / "tables" / "t").exists()
    assert git(db.repo, "ls-files", "tables").splitlines() == ["tables/t.json"]
    assert git(db.repo, "log", "-1", "--format=%s") == f"snapshot {STAMPS[1]}: t -40\n"


def test_table_growing_over_threshold_counts_only_new_rows(db_url, repo_path, small_shards):
    execute(
        db_url,
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "INSERT INTO t VALUES " + ", ".join(f"({i}, 'row {i}')" for i in range(1, 21)),
    )
    db = Db(db_url, repo_path)
    assert db.export().exit_code == 0
    assert db.manifest()["file"] == "tables/t.json"
    execute(db_url, "INSERT INTO t VALUES (21, 'row 21')")
    result = db.export()
    assert result.exit_code == 0, result.output
    assert [s["file"] for s in db.manifest()["shards"]] == [
        p for p, _ in expected_shards(range(1, 22))
    ]
    subject = git(repo_path, "log", "-1", "--format=%s")
    assert subject == f"snapshot {STAMPS[1]}: t +1\n"


def test_new_shards_are_in_place_with_the_index_matching_them(sharded):
    # Export moves the staged files into the work tree and writes the index with
    # their stat data; diff-files trusts that data without hashing, so any stale
    # entry would show here. The objects were written by jsonsnap itself.
    db, _ = sharded
    key = next(k for k in range(41, 121, 2) if is_cut(k))
    execute(db.url, f"INSERT INTO t VALUES ({key}, 'new')", "DELETE FROM t WHERE id = 2")
    assert db.export().exit_code == 0
    assert git(db.repo, "diff-files", "--name-only") == ""
    assert git(db.repo, "status", "--porcelain", "--untracked-files=all") == ""
    git(db.repo, "fsck", "--strict", "--no-dangling")
    for path in git(db.repo, "ls-files").splitlines():
        blob = git(db.repo, "rev-parse", f"HEAD:{path}").strip()
        assert git(db.repo, "hash-object", "--no-filters", path).strip() == blob


def test_installed_files_are_dated_before_the_index(sharded):
    # A file as new as the index is "racily clean": git hashes it all over again
    # at the next status or checkout. Export dates the files it installs back.
    db, ids = sharded
    execute(db.url, f"UPDATE t SET v = 'changed' WHERE id = {ids[0]}")
    assert db.export().exit_code == 0
    index_seconds = (db.repo / ".git" / "index").stat().st_mtime_ns // 10**9
    for path in git(db.repo, "ls-files").splitlines():
        assert (db.repo / path).stat().st_mtime_ns // 10**9 < index_seconds, path
    assert git(db.repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_head_files_are_trusted_where_the_index_vouches_for_them(sharded, monkeypatch):
    # The summary reads HEAD's copies without their checksum only where git
    # itself would trust them: the stat data the index recorded, older than
    # the index. Anywhere else the checksum decides, and git's copy wins.
    db, _ = sharded
    head = HeadState.of(SnapshotRepo.open(db.repo))
    shard = next(f for f in head.files.values() if f.path.count("/") == 2)
    assert set(head.vouched) == set(head.blobs)
    hashed = []
    sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda data=b"": hashed.append(data) or sha256(data))
    path, index = db.repo / shard.path, db.repo / ".git" / "index"
    good, stat = path.read_bytes(), path.stat()
    assert list(head.read([shard])) == [good]
    assert hashed == []
    # Other bytes of the same size and mtime: the change time gives them away.
    path.write_bytes(good.replace(b"row", b"ROW"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert list(head.read([shard])) == [good]
    assert len(hashed) == 1
    # An entry for another blob vouches for nothing, whatever its stat data.
    path.write_bytes(good)
    with index.open("rb") as stream:
        entries = read_cache(stream)[1]
    key = (shard.path, 0)
    fields = list(entries[key])
    fields[1] = bytes(20)  # the blob id
    entries[key] = IndexEntry(tuple(fields))
    with index.open("wb") as stream:
        write_cache(list(entries.values()), stream)
    assert shard.path not in HeadState.of(SnapshotRepo.open(db.repo)).vouched
    # An entry as new as the index is racily clean: not vouched for at all.
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    racy = HeadState.of(SnapshotRepo.open(db.repo))
    assert shard.path not in racy.vouched
    assert set(racy.vouched) < set(head.vouched)


def test_a_file_edited_during_a_run_is_not_recorded_as_clean(sqlite_url, repo_path):
    # The index written after a commit keeps, for the files the commit did not
    # change, the stat data recovery recorded: an edit made meanwhile shows in
    # git status, the next run puts HEAD's bytes back, and its summary is exact.
    execute(
        sqlite_url,
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE TABLE b (id int PRIMARY KEY, v text)",
        *(f"INSERT INTO {t} VALUES ({i}, 'row {i}')" for t in "ab" for i in range(1, 6)),
    )
    engine = engine_for(sqlite_url)
    export_snapshot(engine, repo_path, timestamp=STAMPS[0])
    b_file = repo_path / "tables" / "b.json"
    edited = []

    def edit_b(table, done, total):
        if not edited:
            edited.append(table)
            with b_file.open("r+b") as stream:  # same inode, same size
                data = stream.read()
                stream.seek(0)
                stream.write(data.replace(b"row 1", b"ROW 1"))
            time.sleep(1.1)  # older than the index the commit writes: not racily clean

    execute(sqlite_url, "UPDATE a SET v = 'changed' WHERE id = 1")
    export_snapshot(engine, repo_path, timestamp=STAMPS[1], progress=edit_b)
    assert git(repo_path, "status", "--porcelain") == " M tables/b.json\n"
    execute(sqlite_url, "UPDATE b SET v = 'changed' WHERE id = 3")
    result = export_snapshot(engine, repo_path, timestamp=STAMPS[2])
    engine.dispose()
    assert git(repo_path, "log", "-1", "--format=%s") == f"snapshot {STAMPS[2]}: b ~1\n"
    assert git(repo_path, "status", "--porcelain") == ""
    blob = git(repo_path, "rev-parse", "HEAD:tables/b.json").strip()
    assert git(repo_path, "hash-object", "--no-filters", "tables/b.json").strip() == blob
    assert result.commit is not None


def test_a_row_replaced_by_another_key_in_the_same_shard_is_added_and_deleted(sharded):
    # Same shard, same row count, one differing row: not a change, since its key differs.
    db, ids = sharded
    key = next(k for k in ids[20:] if not is_cut(k) and not is_cut(k + 1))
    execute(db.url, f"DELETE FROM t WHERE id = {key}", f"INSERT INTO t VALUES ({key + 1}, 'x')")
    assert db.export().exit_code == 0
    assert db.changed_files() == [shard_of(ids, key)]
    assert git(db.repo, "log", "-1", "--format=%s") == f"snapshot {STAMPS[1]}: t +1 -1\n"


@pytest.mark.parametrize(
    ("setting", "compressed"),
    [(None, True), ("0", False), ("9", True)],
    ids=["git's default: ISA-L", "looseCompression 0", "looseCompression 9"],
)
def test_data_objects_are_zlib_at_the_configured_level(sqlite_url, repo_path, setting, compressed):
    execute(
        sqlite_url,
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(40))",
        "INSERT INTO t VALUES " + ", ".join(f"({i}, 'the same words again')" for i in range(300)),
    )
    assert run("init", "--repo", str(repo_path)).exit_code == 0
    if setting is not None:
        git(repo_path, "config", "core.looseCompression", setting)
    assert run("export", "--db", sqlite_url, "--repo", str(repo_path)).exit_code == 0
    content = (repo_path / "tables/t.json").read_bytes()
    stored = loose_object(repo_path, "HEAD:tables/t.json").read_bytes()
    assert zlib.decompress(stored) == b"blob %d\0" % len(content) + content
    assert (len(stored) < len(content) // 4) is compressed
    git(repo_path, "fsck", "--strict", "--no-dangling")


def test_only_the_files_head_lacks_are_staged(sharded, tmp_path):
    # A quiet night writes nothing to disk: a file HEAD holds byte for byte is
    # never staged. Here one shard changed, so exactly that one is.
    db, ids = sharded
    execute(db.url, f"UPDATE t SET v = 'changed' WHERE id = {ids[30]}")
    engine = engine_for(db.url)
    stage = tmp_path / "stage"
    stage.mkdir()
    head = HeadState.of(SnapshotRepo.open(db.repo))
    _, staged = read_database(engine, stage, Selection(), held=head.holds)
    engine.dispose()
    changed = shard_of(ids, ids[30])
    assert list(staged) == [changed]
    assert [p.name for p in stage.iterdir()] == [changed.replace("/", "%")]
    assert b'"changed"' in staged[changed].read_bytes()


def test_files_larger_than_memory_are_written_as_they_grow(db_url, tmp_path, monkeypatch):
    # Every shard outgrows a 64-byte allowance and is written out while rows
    # arrive; the files are exactly those kept in memory until saved.
    execute(
        db_url,
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "INSERT INTO t VALUES " + ", ".join(f"({i}, 'row {i}')" for i in range(1, 400)),
    )
    monkeypatch.setattr(layout, "SHARD_MIN_ROWS", 20)
    monkeypatch.setattr(layout, "SHARD_MEAN_ROWS", 8)
    trees = []
    for memory in (writer._MEMORY_BYTES, 64):
        monkeypatch.setattr(writer, "_MEMORY_BYTES", memory)
        repo = tmp_path / f"repo-{memory}"
        assert run("export", "--db", db_url, "--repo", str(repo)).exit_code == 0
        assert len(list((repo / "tables/t").iterdir())) > 10
        git(repo, "fsck", "--strict", "--no-dangling")
        trees.append(work_tree(repo))
    assert trees[0] == trees[1]


def split_by_a_new_cut(ids):
    """A shard of at least three rows, and a new key inside it that would be a cut."""
    for path, keys in expected_shards(ids):
        cut = next((k for k in range(keys[1] + 1, keys[-1], 2) if is_cut(k)), None)
        if cut is not None:
            return path, keys, cut
    raise AssertionError("the fixture's keys offer no such cut")


@pytest.mark.parametrize("memory", ["in-memory", "spilled"])
def test_summary_is_exact_when_a_new_cut_splits_a_changed_shard(sharded, monkeypatch, memory):
    # The split shard keeps its name but no longer ends where it did: it must be
    # merged with its new neighbour, not compared alone. The shard changed far
    # from it is compared alone, beside the read, whether its file was built in
    # memory or written as it grew.
    if memory == "spilled":
        monkeypatch.setattr(writer, "_MEMORY_BYTES", 64)
    db, ids = sharded
    path, keys, cut = split_by_a_new_cut(ids)
    far = next(k for p, ks in expected_shards(ids) if p != path for k in ks)
    execute(
        db.url,
        f"INSERT INTO t VALUES ({cut}, 'new')",
        f"UPDATE t SET v = 'x' WHERE id = {keys[0]}",
        f"UPDATE t SET v = 'y' WHERE id = {far}",
    )
    assert db.export().exit_code == 0
    assert git(db.repo, "log", "-1", "--format=%s") == f"snapshot {STAMPS[1]}: t +1 ~2\n"
    assert git(db.repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(db.repo, "diff-files", "--name-only") == ""
    for path in git(db.repo, "ls-files").splitlines():  # each blob is its file's bytes
        blob = git(db.repo, "rev-parse", f"HEAD:{path}").strip()
        assert git(db.repo, "hash-object", "--no-filters", path).strip() == blob


def test_a_failure_after_head_files_were_released_restores_them(sharded):
    # A changed shard's previous version leaves the work tree as soon as it is
    # compared; the run then fails, and the work tree is exactly as it was.
    db, ids = sharded
    execute(
        db.url,
        "CREATE TABLE u (id int PRIMARY KEY)",
        "INSERT INTO u VALUES (1)",
        f"UPDATE t SET v = 'changed' WHERE id = {ids[30]}",
    )
    before, head_before = work_tree(db.repo), git(db.repo, "rev-parse", "HEAD")
    released = db.repo / shard_of(ids, ids[30])

    def progress(table, done, total):
        if table == "u":  # tables shown with progress are read in turn: t first
            for _ in range(200):
                if not released.exists():
                    raise RuntimeError("stopped after the release")
                time.sleep(0.05)
            raise AssertionError("the changed shard's old version was never released")

    engine = engine_for(db.url)
    with pytest.raises(RuntimeError, match="stopped after the release"):
        export_snapshot(engine, db.repo, timestamp=STAMPS[1], progress=progress)
    engine.dispose()
    assert git(db.repo, "rev-parse", "HEAD") == head_before
    assert work_tree(db.repo) == before
    assert git(db.repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(db.repo, "diff-files", "--name-only") == ""
