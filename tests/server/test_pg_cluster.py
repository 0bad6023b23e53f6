"""The throwaway PostgreSQL cluster of the tests, benches and chain demo (storage.pg_cluster)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from store_server.pg_plan import ClusterPlan
from store_server.storage.pg_cluster import Cluster


@pytest.mark.postgres
def test_each_test_gets_an_empty_database_of_its_own(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
        conn.execute("INSERT INTO mine VALUES (1)")
        assert conn.execute("SELECT current_database()").fetchone() is not None


@pytest.mark.postgres
def test_the_next_test_does_not_see_the_previous_ones_tables(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'mine'"
        ).fetchone()
    assert found == (0,)


@pytest.mark.postgres
def test_tcp_clients_need_a_password(pg_cluster: Cluster, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE someone LOGIN PASSWORD 'right-one'")
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    try:
        url = pg_cluster.plan.tcp_url(dbname, "someone")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, password="wrong-one").close()
        with psycopg.connect(url, password="right-one") as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("someone",)
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute("DROP ROLE someone")


@pytest.mark.postgres
def test_the_server_runs_unprivileged_on_ephemeral_settings(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_the_plan_refuses_a_socket_path_too_long() -> None:
    with pytest.raises(ValueError, match="too long"):
        ClusterPlan(bin_dir=Path("/x"), data_dir=Path("/d"), socket_dir=Path("/" + "s" * 100))


def test_the_plan_runs_as_the_service_user_when_asked() -> None:
    plan = ClusterPlan(
        bin_dir=Path("/pg/bin"), data_dir=Path("/t/data"), socket_dir=Path("/t"), run_as="pg"
    )
    assert plan.initdb_argv()[:4] == ["runuser", "-u", "pg", "--"]
    assert "host=%2Ft" in plan.url("db")
