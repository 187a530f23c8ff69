"""The skip-cached executor: stored steps never start, and say so."""

import contextlib
from pathlib import Path

import dagster as dg
import pytest

from further_dagster.dagster import location_of
from tests.dagster import defs_module

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.dagster

SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])
SUMMARY = dg.AssetKey(["dag_demo", "summary"])


def _run(instance, selection, tags=None):
    # Dagster has no public way to make an asset job reconstructable outside a code location.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.defs_module", "in_process_defs", working_directory=str(ROOT)
    )
    job = repo.get_reconstructable_job("__ASSET_JOB")
    with dg.execute_job(
        job, instance=instance, asset_selection=selection, tags=tags or {}
    ) as result:
        assert result.success
        return [e for e in result.all_events]


def _range_tags():
    keys = location_of(defs_module.defs).asset_by_key[POWER].partitions.keys
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def test_cached_steps_never_start(further_tmp_root, calls, dagster_instance):
    with contextlib.nullcontext(dagster_instance) as instance:
        first = _run(instance, [SRC, POWER, SUMMARY], _range_tags())
        started = [e.step_key for e in first if e.event_type_value == "STEP_START"]
        assert sorted(started) == ["dag_demo__power", "dag_demo__src", "dag_demo__summary"]
        assert calls.count() == 1 + 3 + 1

        second = _run(instance, [SRC, POWER, SUMMARY], _range_tags())
        assert [e for e in second if e.event_type_value == "STEP_START"] == []
        assert calls.count() == 5
        engine = [
            e
            for e in second
            if e.event_type_value == "ENGINE_EVENT" and "already stored" in (e.message or "")
        ]
        assert len(engine) == 1 and "3 step(s) already stored" in engine[0].message
        mats = [e for e in second if e.event_type_value == "ASSET_MATERIALIZATION"]
        # one per unpartitioned asset and one per partition of the swept asset
        assert len(mats) == 1 + 3 + 1
        for event in mats:
            meta = event.event_specific_data.materialization.metadata
            assert meta["further/cache"].value == "hit"
            assert len(meta["further/logic_key"].value) == 32
        assert instance.get_latest_materialization_event(SUMMARY) is not None


def test_only_uncached_steps_run_even_below_a_cached_one(further_tmp_root, calls, dagster_instance):
    from further_dagster import Session

    with contextlib.nullcontext(dagster_instance) as instance:
        Session(progress=False).call("dag_demo.src")  # a notebook stored src
        events = _run(instance, [SRC, POWER], _range_tags())
        started = [e.step_key for e in events if e.event_type_value == "STEP_START"]
        assert started == ["dag_demo__power"]
        assert calls.count("src") == 1 and calls.count("power") == 3


def test_run_config_specs_are_planned_by_the_executor_too(
    further_tmp_root, calls, dagster_instance
):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.defs_module", "in_process_defs", working_directory=str(ROOT)
    )
    config = {"ops": {"dag_demo__src": {"config": {"n": 6}}}}

    def run():
        with dg.execute_job(
            repo.get_reconstructable_job("__ASSET_JOB"),
            instance=dagster_instance,
            asset_selection=[SRC],
            run_config=config,
        ) as result:
            assert result.success
            return [e.event_type_value for e in result.all_events]

    _run(dagster_instance, [SRC])  # the default instance (n=4) is stored
    assert "STEP_START" in run()  # n=6 is another instance: not a cache hit
    assert "STEP_START" not in run()  # now it is stored
    latest = dagster_instance.get_latest_materialization_event(SRC).asset_materialization
    assert latest.metadata["further/specs"].value == {"n": 6}
    assert calls.count("src") == 2


def test_a_cached_run_records_each_step_on_top_of_its_upstreams_new_record(
    further_tmp_root, calls, dagster_instance
):
    """The cached steps' records are written together (one transaction on SQLite), yet each
    one's input pointer is the storage id of its upstream's record in this same run: what
    Dagster's staleness reads."""
    from further_dagster.dagster import _compat

    _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    second = _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    run_id = dagster_instance.get_runs(limit=1)[0].run_id  # the second run
    summary = dagster_instance.get_latest_data_version_record(SUMMARY)
    power = dagster_instance.get_latest_data_version_record(POWER)
    assert summary.run_id == power.run_id == run_id
    tags = summary.asset_materialization.tags
    assert tags[_compat.get_input_event_pointer_tag(POWER)] == str(power.storage_id)
    assert (
        tags[_compat.get_input_data_version_tag(POWER)]
        == (power.asset_materialization.tags["dagster/data_version"])
    )
    assert (
        tags["dagster/data_version"]
        == summary.asset_materialization.metadata["further/logic_key"].value
    )
    assert calls.count() == 5  # nothing computed the second time
    checks = [e for e in second if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(e.event_specific_data.passed for e in checks)
    # each check targets its asset's record of this run (what the UI links the check to)
    for event in checks:
        evaluation = event.event_specific_data
        latest = dagster_instance.get_latest_data_version_record(evaluation.asset_key)
        target = evaluation.target_materialization_data
        assert (target.storage_id, target.run_id) == (latest.storage_id, run_id)
        assert target.timestamp == latest.event_log_entry.timestamp
    # every recorded event is in the event log, in the order the run emitted it
    stored = [e.dagster_event.event_type_value for e in dagster_instance.all_logs(run_id)]
    emitted = [e.event_type_value for e in second]
    assert [t for t in stored if t in emitted] == [t for t in emitted if t in stored]


def test_an_event_batch_is_one_commit_others_see_at_its_end(tmp_path):
    """On SQLite storage, the events of a batch are visible to this thread at once (a storage
    id is known as soon as its event is written) and to another reader (the webserver) when
    the batch commits; the batch commits when its block raises too."""
    from further_dagster.dagster.sqlite_events import event_batch, install_sqlite_engine_cache

    install_sqlite_engine_cache()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    key = dg.AssetKey(["batch", "probe"])
    with (
        dg.DagsterInstance.from_config(str(home)) as writer,
        dg.DagsterInstance.from_config(str(home)) as reader,
    ):
        with event_batch(writer) as batch:
            assert batch is not None
            writer.report_runless_asset_event(dg.AssetMaterialization(key, partition=None))
            assert writer.get_latest_materialization_event(key) is not None
            assert reader.get_latest_materialization_event(key) is None
            batch.commit()
            assert reader.get_latest_materialization_event(key) is not None
        with pytest.raises(RuntimeError), event_batch(writer):
            writer.report_runless_asset_event(dg.AssetMaterialization(key, metadata={"n": 2}))
            raise RuntimeError("a step failed")
        latest = reader.get_latest_materialization_event(key).asset_materialization
        assert latest.metadata["n"].value == 2


def _shard_schema(path):
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        schema = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        stamp = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return schema, stamp, mode


def test_a_new_run_shard_is_a_copy_of_dagsters_own(tmp_path):
    """On SQLite storage, the first run's event-log shard is initialized by Dagster and kept as
    a template; later runs' shards are copies of it: the same tables, indexes, alembic stamp
    and WAL mode as Dagster's init gives, never a *.db file Dagster would take for a run, and
    their events are stored and read as before."""
    from further_dagster.dagster.sqlite_events import install_sqlite_engine_cache

    install_sqlite_engine_cache()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = [dg.materialize([probe], instance=instance).run_id for _ in range(2)]
        storage = instance.event_log_storage
        first, second = (storage.path_for_shard(r) for r in runs)
        templates = list(Path(storage._base_dir).glob(".further-run-shard-*"))
        assert len(templates) == 1 and templates[0].suffix == ".sqlite"
        assert sorted(storage.get_all_run_ids()) == sorted(runs)
        for run_id in runs:
            logs = instance.all_logs(run_id)
            stored = {e.dagster_event.event_type_value for e in logs if e.is_dagster_event}
            assert {"PIPELINE_SUCCESS", "ASSET_MATERIALIZATION"} <= stored
        # the copy's schema, stamp and journal mode are those of Dagster's own init
        from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
            SqliteEventLogStorage,
        )
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        fresh = SqliteEventLogStorage(str(tmp_path / "fresh"))
        SqliteEventLogStorage._initdb(
            fresh, create_engine(fresh.conn_string_for_shard("x"), poolclass=NullPool)
        )
        expected = _shard_schema(fresh.path_for_shard("x"))
        assert _shard_schema(str(templates[0])) == expected
        schema, stamp, mode = _shard_schema(second)
        assert (schema, stamp, mode) == expected
        assert _shard_schema(first)[:2] == expected[:2]


def test_a_process_does_not_init_stamped_shards_again(tmp_path, monkeypatch):
    """Another process on the same storage (a new instance) neither re-inits the stamped index
    shard nor a new run's shard (a template copy): Dagster's init, which loads every alembic
    script, does not run; the runs before and the new one read back as usual."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from further_dagster.dagster.sqlite_events import install_sqlite_engine_cache

    install_sqlite_engine_cache()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(home)) as instance:
        before = [dg.materialize([probe], instance=instance).run_id for _ in range(2)]
    inits: list[object] = []
    dagster_initdb = SqliteEventLogStorage._initdb
    monkeypatch.setattr(
        SqliteEventLogStorage,
        "_initdb",
        lambda self, *a, **k: inits.append(a) or dagster_initdb(self, *a, **k),
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        after = dg.materialize([probe], instance=instance).run_id
        for run_id in [*before, after]:
            logs = instance.all_logs(run_id)
            assert "ASSET_MATERIALIZATION" in {
                e.dagster_event.event_type_value for e in logs if e.is_dagster_event
            }
        latest = instance.get_latest_materialization_event(probe.key)
        assert latest is not None and latest.run_id == after
    assert inits == []
