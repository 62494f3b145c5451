from conftest import git, run


def test_demo_then_export_commits_every_table(sqlite_url, repo_path):
    assert run("demo", "--db", sqlite_url).exit_code == 0
    result = run(
        "export",
        "--db",
        sqlite_url,
        "--repo",
        str(repo_path),
        "--timestamp",
        "2026-11-28T02:00:00Z",
    )
    assert result.exit_code == 0, result.output
    assert "materials +300 (new table)" in result.output
    assert git(repo_path, "log", "--format=%s").startswith("snapshot 2026-11-28T02:00:00Z:")


def test_postgres_database_is_created_per_test(pg_url, repo_path):
    from conftest import execute

    execute(pg_url, "CREATE TABLE t (id int primary key)", "INSERT INTO t VALUES (1)")
    result = run("export", "--db", pg_url, "--repo", str(repo_path))
    assert result.exit_code == 0, result.output
    assert "t +1 (new table)" in result.output
