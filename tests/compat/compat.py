"""The official Python clients (`pip install td-client pytd`) against a running td-local.

Every check drives td-local only through `tdclient` (its public methods, or its own transport
`client.api.get/post` for the few calls the client has no method for) or `pytd` (its public
methods, called as a TD user calls them) and asserts what comes back.
Run by tests/compat/run, which starts the server and passes:
  TD_LOCAL_URL, TD_MASTER_KEY, TD_WRITE_ONLY_KEY (same account), TD_OTHER_MASTER_KEY (another account).
Prints one line per check and closes with "N passed, N failed"; exits 1 if any check failed.
"""

import gzip
import io
import json
import os
import sys
import tempfile
import time
import traceback
import uuid

import msgpack
import tdclient
from tdclient import errors

URL = os.environ["TD_LOCAL_URL"]
MASTER = os.environ["TD_MASTER_KEY"]
WRITE_ONLY = os.environ["TD_WRITE_ONLY_KEY"]
OTHER_MASTER = os.environ["TD_OTHER_MASTER_KEY"]
UNKNOWN_KEY = "1/" + "0" * 40

# Jobs run in the background: poll every second, give up after a minute.
WAIT = {"wait_interval": 1, "timeout": 60}
GROUP_BY_CODE = "SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code ORDER BY code"


def client(key=MASTER):
    # A short retry budget: a server error must fail the check, not retry GETs for 10 minutes.
    return tdclient.Client(apikey=key, endpoint=URL, max_cumul_retry_delay=4)


def gzip_msgpack(records):
    """An import body: gzip of msgpack maps written back to back."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        for record in records:
            gz.write(msgpack.packb(record))
    return buf.getvalue()


def unique(prefix):
    """A fresh name, so checks do not depend on each other or on an earlier run."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def expect_error(error_class, call, *args):
    try:
        call(*args)
    except error_class as e:
        return e
    raise AssertionError(f"{call.__name__}{args} did not raise {error_class.__name__}")


def fresh_database(td, prefix):
    name = unique(prefix)
    assert td.create_database(name) is True
    return name


def rows_by_time(td, db, table):
    """Every row of a table (tail), oldest first."""
    return sorted(td.tail(db, table, 10000), key=lambda r: (r["time"], json.dumps(r, sort_keys=True)))


def eventually_count(td, db, table, expected, timeout=30):
    """A table's count once it has caught up: TD's counts lag a commit, a rename or a swap
    (td-client-java's TestTDClient.testBulkImport waits up to 5 minutes), and so do td-local's."""
    deadline = time.monotonic() + timeout
    while True:
        count = td.table(db, table).count
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.25)


def run_query(td, q, **kwargs):
    job = td.query("sample_datasets", q, type="presto", **kwargs)
    job.wait(**WAIT)
    assert job.success(), f"job {job.id} ended {job.status()}: {job.debug}"
    return job


def get_json(td, path, **kwargs):
    with td.api.get(path, **kwargs) as res:
        body = res.read()
        assert res.status == 200, f"GET {path}: {res.status} {body!r}"
        return json.loads(body)


# ---------------------------------------------------------------------------------------------


def check_databases():
    td = client()
    name = unique("compat_db")
    assert td.create_database(name) is True
    names = [d.name for d in td.databases()]
    assert name in names and "sample_datasets" in names, names
    db = td.database(name)
    assert (db.name, db.count) == (name, 0), (db.name, db.count)
    assert td.database("sample_datasets").count == 5000
    shown = get_json(td, f"/v3/database/show/{name}")
    assert shown["name"] == name and isinstance(shown["id"], str), shown
    expect_error(errors.AlreadyExistsError, td.create_database, name)
    assert td.delete_database(name) is True
    assert name not in [d.name for d in td.databases()]
    expect_error(errors.NotFoundError, td.database, name)
    expect_error(errors.NotFoundError, td.delete_database, name)


def check_tables():
    td = client()
    db = fresh_database(td, "compat_tables")
    assert td.create_log_table(db, "first") is True
    assert td.create_log_table(db, "second") is True
    assert sorted(t.name for t in td.tables(db)) == ["first", "second"]
    first = td.table(db, "first")
    assert (first.type, first.count, first.schema) == ("log", 0, []), (first.type, first.count, first.schema)
    assert isinstance(first.estimated_storage_size, int)
    expect_error(errors.AlreadyExistsError, td.create_log_table, db, "first")

    rows = [{"time": 1700000000 + i, "n": i} for i in range(3)]
    body = gzip_msgpack(rows)
    td.import_data(db, "first", "msgpack.gz", body, len(body))
    assert td.table(db, "first").count == 3
    assert td.swap_table(db, "first", "second") is True
    assert (eventually_count(td, db, "first", 0), eventually_count(td, db, "second", 3)) == (0, 3)
    assert rows_by_time(td, db, "second") == rows
    assert ["n", "long"] in [list(c[:2]) for c in td.table(db, "second").schema]

    assert td.delete_table(db, "first") == "log"
    assert [t.name for t in td.tables(db)] == ["second"]
    expect_error(errors.NotFoundError, td.table, db, "first")
    expect_error(errors.NotFoundError, td.delete_table, db, "first")
    expect_error(errors.NotFoundError, td.create_log_table, unique("missing_db"), "tbl")
    td.delete_database(db)


def check_table_create_settings_and_expiry():
    """What `table/create` and `table/update` take as TD's API description lists them, through
    the client's own calls: create with settings (its `_create_table` params), an idempotent
    create repeated, `update_expire` with 0 ("expiration disabled")."""
    td = client()
    db = fresh_database(td, "compat_table_settings")
    params = {"schema": json.dumps([["code", "long"]]), "expire_days": 30, "description": "made here"}
    assert td.api._create_table(db, "made", "log", params) is True
    table = td.table(db, "made")
    assert (table.expire_days, table.schema[0][:2]) == (30, ["code", "long"]), (table.expire_days, table.schema)
    for _ in range(2):
        assert td.api._create_table(db, "idem", "log", {"idempotent_key": "once"}) is True
    expect_error(errors.AlreadyExistsError, td.create_log_table, db, "idem")
    assert td.update_expire(db, "made", 0) is True
    assert td.table(db, "made").expire_days is None
    td.delete_database(db)


def check_import_data():
    td = client()
    db = fresh_database(td, "compat_import")
    td.create_log_table(db, "events")
    plain = [{"time": 1700000000, "user": "a", "v2": 1.5}, {"time": 1700000001, "user": "b", "v2": None}]
    body = gzip_msgpack(plain)
    elapsed = td.import_data(db, "events", "msgpack.gz", body, len(body))
    assert isinstance(elapsed, float)
    assert rows_by_time(td, db, "events") == plain

    with_id = [{"time": 1700000100, "user": "c"}]
    body = gzip_msgpack(with_id)
    import_id = unique("batch")
    td.import_data(db, "events", "msgpack.gz", body, len(body), unique_id=import_id)
    td.import_data(db, "events", "msgpack.gz", body, len(body), unique_id=import_id)
    assert rows_by_time(td, db, "events") == plain + with_id, "a repeated unique_id is stored once"
    assert td.table(db, "events").count == 3

    # The write-only key may import (and nothing else).
    body = gzip_msgpack([{"time": 1700000200, "user": "d"}])
    client(WRITE_ONLY).import_data(db, "events", "msgpack.gz", body, len(body))
    assert td.table(db, "events").count == 4
    expect_error(errors.NotFoundError, td.import_data, db, "nope", "msgpack.gz", body, len(body))
    td.delete_database(db)


def check_bulk_import():
    td = client()
    db = fresh_database(td, "compat_bulk")
    td.create_log_table(db, "target")
    name = unique("session")
    session = td.create_bulk_import(name, db, "target")
    expect_error(errors.AlreadyExistsError, td.create_bulk_import, name, db, "target")
    parts = {
        "part1": [{"time": 1700000000 + i, "k": f"p1-{i}"} for i in range(5)],
        "part2": [{"time": 1700001000 + i, "k": f"p2-{i}"} for i in range(7)],
    }
    for part, records in parts.items():
        body = gzip_msgpack(records)
        session.upload_part(part, body, len(body))
    assert sorted(session.list_parts()) == ["part1", "part2"]
    assert name in [b.name for b in td.bulk_imports()]

    assert session.freeze() is True
    assert session.upload_frozen is True and session.status == "uploading", session.status
    job = session.perform(wait=True, **WAIT)
    assert job.success(), f"perform job {job.id}: {job.status()}"
    assert session.status == "ready", session.status
    assert (session.valid_records, session.error_records) == (12, 0), (session.valid_records, session.error_records)
    assert td.table(db, "target").count == 0, "nothing is visible before the commit"

    assert session.commit(wait=True, **WAIT) is True
    assert td.bulk_import(name).status == "committed"
    expected = sorted(parts["part1"] + parts["part2"], key=lambda r: r["time"])
    assert rows_by_time(td, db, "target") == expected

    assert session.delete() is True
    expect_error(errors.NotFoundError, td.bulk_import, name)
    td.delete_database(db)


def check_schema_tuples_and_mistyped_values():
    """A schema tuple is [key, type, alias] (td-client-python's update_schema docstring): SQL knows
    the column by its alias and reads the values stored under its key. TD is schema-on-read: a
    bulk import counts a value of another type than its column's as valid, and it reads NULL; an
    array or map column reads as a list or dict."""
    td = client()
    db = fresh_database(td, "compat_schema")
    td.create_log_table(db, "typed")
    schema = [["n_key", "long", "n"], ["d", "double"], ["s", "string"]]
    assert td.update_schema(db, "typed", schema) is True
    assert [list(c) for c in td.table(db, "typed").schema] == schema, td.table(db, "typed").schema
    name = unique("session")
    session = td.create_bulk_import(name, db, "typed")
    records = [
        {"time": 1700000000, "n_key": 5, "d": 3, "s": 7},
        {"time": 1700000001, "n_key": "abc", "d": "x", "s": "t"},
    ]
    body = gzip_msgpack(records)
    session.upload_part("p1", body, len(body))
    assert session.freeze() is True
    job = session.perform(wait=True, **WAIT)
    assert job.success(), f"perform job {job.id}: {job.status()}"
    assert (session.valid_records, session.error_records) == (2, 0), (session.valid_records, session.error_records)
    assert session.commit(wait=True, **WAIT) is True
    assert [list(c) for c in td.table(db, "typed").schema] == schema, "the import added no column"
    job = td.query(db, "SELECT n, d, s FROM typed ORDER BY time", type="presto")
    job.wait(**WAIT)
    assert job.success(), f"job {job.id} ended {job.status()}: {job.debug}"
    assert td.job_result(job.id) == [[5, 3.0, "7"], [None, None, "t"]], td.job_result(job.id)
    assert session.delete() is True

    # Array and map columns read back as lists and dicts, typed as Presto types them.
    body = gzip_msgpack([{"time": 1700000000, "a": ["x", "y"], "m": {"k": "v"}}])
    td.create_log_table(db, "nested")
    td.import_data(db, "nested", "msgpack.gz", body, len(body))
    job = td.query(db, "SELECT a, m FROM nested", type="presto")
    job.wait(**WAIT)
    assert job.success(), f"job {job.id} ended {job.status()}: {job.debug}"
    assert td.job_result(job.id) == [[["x", "y"], {"k": "v"}]], td.job_result(job.id)
    assert [list(c) for c in job.result_schema] == [["a", "array(varchar)"], ["m", "map(varchar,varchar)"]], job.result_schema
    td.delete_database(db)


def check_query_results():
    td = client()
    job = run_query(td, GROUP_BY_CODE)
    assert job.result_schema is not None and [c[0] for c in job.result_schema] == ["code", "cnt"], job.result_schema
    from_msgpack = list(job.result_format("msgpack"))
    from_json = td.job_result_format(job.id, "json")
    assert from_msgpack == from_json, (from_msgpack, from_json)
    assert len(from_msgpack) == job.num_records and len(from_msgpack) > 1, from_msgpack
    assert sum(row[1] for row in from_msgpack) == 5000
    assert [row[0] for row in from_msgpack] == sorted(row[0] for row in from_msgpack)
    assert td.job_result(job.id) == from_msgpack
    assert td.job_status(job.id) == "success"


def check_download_job_result():
    td = client()
    job = run_query(td, GROUP_BY_CODE)
    rows = td.job_result(job.id)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.msgpack.gz")
        assert td.download_job_result(job.id, path, num_threads=2) is True
        with open(path, "rb") as f:
            whole = f.read()
    assert len(whole) == job.result_size, (len(whole), job.result_size)
    assert list(msgpack.Unpacker(io.BytesIO(gzip.decompress(whole)), raw=False)) == rows

    # A range in the middle, as the client's parallel download asks for it.
    start, end = 3, min(40, len(whole) - 1)
    path = f"/v3/job/result/{job.id}?format=msgpack.gz"
    with td.api.get(path, headers={"Range": f"bytes={start}-{end}"}) as res:
        assert res.status == 206, res.status
        assert res.headers["Content-Range"] == f"bytes {start}-{end}/{len(whole)}", res.headers
        assert res.read() == whole[start : end + 1]


def check_query_with_result_url():
    td = client()
    db = fresh_database(td, "compat_output")
    job = run_query(td, GROUP_BY_CODE, result_url=f"td://@/{db}/by_code")
    expected = sorted(map(tuple, td.job_result(job.id)))
    written = sorted((r["code"], r["cnt"]) for r in td.tail(db, "by_code", 1000))
    assert written == expected, (written, expected)
    td.delete_database(db)


def check_query_into_a_saved_result_or_a_connection():
    """The two other ways TD takes a job's output: `--result NAME:TABLE` (the toolbelt's form for
    a saved result) and `result_connection_id` with `result_connection_settings`, as digdag's td>
    sends them for `result_connection:` + `result_settings:` (td-client-java TDJobRequest)."""
    td = client()
    db = fresh_database(td, "compat_connection")
    name = unique("compat_saved")
    assert td.create_result(name, f"td://@/{db}/unused") is True
    expected = sorted(map(tuple, td.job_result(run_query(td, GROUP_BY_CODE).id)))

    run_query(td, GROUP_BY_CODE, result_url=f"{name}:by_name")
    written = sorted((r["code"], r["cnt"]) for r in td.tail(db, "by_name", 1000))
    assert written == expected, (written, expected)

    connection_id = get_json(td, "/v3/connections/lookup", params={"name": name})["id"]
    settings = {"user_database_name": db, "user_table_name": "by_connection", "mode": "append"}
    for _ in range(2):
        run_query(
            td,
            GROUP_BY_CODE,
            result_connection_id=connection_id,
            result_connection_settings=json.dumps(settings),
        )
    written = sorted((r["code"], r["cnt"]) for r in td.tail(db, "by_connection", 1000))
    assert written == sorted(expected * 2), (written, expected)
    assert "unused" not in [t.name for t in td.tables(db)], "the settings named the table"
    td.delete_result(name)
    td.delete_database(db)


def check_scheduled_query_with_a_result():
    """The seed's scheduled flow (`td sched:create NAME CRON SQL -d DB --result URL`) through the
    client's schedule calls: create (its `start`), list, run for chosen times, history, update,
    delete. Each run is a job that writes where `result` says, with TD_SCHEDULED_TIME() set."""
    td = client()
    db = fresh_database(td, "compat_sched")
    name = unique("compat_sched")
    query = "SELECT TD_SCHEDULED_TIME() AS scheduled, COUNT(1) AS cnt FROM www_access"
    start = td.create_schedule(name, {
        "cron": "@daily", "timezone": "UTC", "delay": 60, "query": query, "type": "presto",
        "database": "sample_datasets", "result": f"td://@/{db}/daily?mode=append",
    })
    assert start is not None and start.hour == 0 and start.minute == 0, start
    listed = {sched.name: sched for sched in td.schedules()}
    assert listed[name].cron == "@daily" and listed[name].delay == 60, vars(listed[name])
    jobs = td.run_schedule(name, 1_700_000_000, 2)
    assert len(jobs) == 2, jobs
    for job in jobs:
        job.wait(**WAIT)
        assert job.success(), f"job {job.id} ended {job.status()}"
    written = sorted(r["scheduled"] for r in td.tail(db, "daily", 10))
    assert written == [1_700_000_000, 1_700_006_400], written
    history = td.history(name, 0, 20)
    assert sorted(str(h.job_id) for h in history) == sorted(str(j.job_id) for j in jobs), history
    td.update_schedule(name, {"cron": "10 * * * *"})
    assert [sched.cron for sched in td.schedules() if sched.name == name] == ["10 * * * *"]
    assert td.delete_schedule(name) == ("10 * * * *", query)
    expect_error(errors.NotFoundError, td.delete_schedule, name)
    td.delete_database(db)


def check_saved_results():
    td = client()
    name = unique("compat_dest")
    url = "td://@/compat_results_db/out"
    assert td.create_result(name, url) is True
    listed = {r.name: r.url for r in td.results()}
    assert listed.get(name) == url, listed
    expect_error(errors.AlreadyExistsError, td.create_result, name, url)
    assert td.delete_result(name) is True
    assert name not in [r.name for r in td.results()]
    expect_error(errors.NotFoundError, td.delete_result, name)


def check_result_export():
    td = client()
    db = fresh_database(td, "compat_export")
    source = run_query(td, GROUP_BY_CODE)
    # td-client has no method for this call: send it through the client's own transport.
    with td.api.post(f"/v3/job/result_export/{source.id}", {"result": f"td://@/{db}/exported?mode=replace"}) as res:
        body = res.read()
        assert 200 <= res.status < 300, (res.status, body)
        export_id = str(json.loads(body)["job_id"])
    export = td.job(export_id)
    export.wait(**WAIT)
    assert export.success(), f"export job {export_id}: {export.status()} {export.debug}"
    expected = sorted(map(tuple, td.job_result(source.id)))
    written = sorted((r["code"], r["cnt"]) for r in td.tail(db, "exported", 1000))
    assert written == expected, (written, expected)
    td.delete_database(db)


def check_error_classes():
    td = client()
    db = fresh_database(td, "compat_errors")
    td.create_log_table(db, "tbl")
    expect_error(errors.NotFoundError, td.tables, unique("missing_db"))
    expect_error(errors.NotFoundError, td.job, "999999999")
    expect_error(errors.AlreadyExistsError, td.create_database, db)
    expect_error(errors.AuthError, client(UNKNOWN_KEY).databases)
    write_only = client(WRITE_ONLY)
    e = expect_error(errors.ForbiddenError, write_only.databases)
    assert "write-only" in str(e), str(e)
    expect_error(errors.ForbiddenError, write_only.create_database, unique("refused"))
    expect_error(errors.ForbiddenError, write_only.delete_table, db, "tbl")
    expect_error(errors.ForbiddenError, write_only.tables, db)  # table/list (treasure-data/td #38)
    # The calls embulk-output-td makes with a write-only key (its PRs #64, #65): table/show, and a
    # create of a table that exists, whose 409 it ignores.
    assert get_json(write_only, f"/v3/table/show/{db}/tbl")["name"] == "tbl"
    expect_error(errors.AlreadyExistsError, write_only.create_log_table, db, "tbl")
    expect_error(errors.ForbiddenError, write_only.create_log_table, db, "new_tbl")
    # Another account does not see this one's databases.
    expect_error(errors.NotFoundError, client(OTHER_MASTER).tables, db)
    assert [t.name for t in td.tables(db)] == ["tbl"], "refused calls changed nothing"
    td.delete_database(db)


def admin_requests():
    """td-local's request log (its admin route): (method, path) of every call so far."""
    return [(r["method"], r["path"]) for r in get_json(client(), "/_td_local/requests")["requests"]]


def check_pytd_bulk_import_append_overwrite_and_hive_query():
    # Imported here: the td-client checks run without pandas.
    import pandas as pd
    import pytd

    import logging

    logging.getLogger("pytd").setLevel(logging.ERROR)  # its progress lines and cursor warning
    db = unique("compat_pytd")
    td = pytd.Client(apikey=MASTER, endpoint=URL, database=db, default_engine="hive")
    td.create_database_if_not_exists(db)
    first = pd.DataFrame(
        {"name": ["a", "b"], "n": [1, 2], "x": [0.5, None], "flag": [True, False], "time": [1700000000, 1700000001]}
    )
    # A table that does not exist yet: pytd creates it, then imports (CSV, its default format).
    td.load_table_from_dataframe(first, f"{db}.people", writer="bulk_import", if_exists="append")
    # An existing table: a session created with mode=append, parts in msgpack.gz.
    second = pd.DataFrame({"name": ["c"], "n": [3], "x": [2.5], "flag": [True], "time": [1700000002]})
    td.load_table_from_dataframe(second, f"{db}.people", writer="bulk_import", if_exists="append", fmt="msgpack")
    got = td.query("SELECT name, n, x, flag FROM people ORDER BY n")
    assert got["columns"] == ["name", "n", "x", "flag"], got
    # Booleans come back as TD stores them from a bulk import: the strings "true"/"false".
    assert got["data"] == [["a", 1, 0.5, "true"], ["b", 2, None, "false"], ["c", 3, 2.5, "true"]], got

    third = pd.DataFrame({"name": ["z"], "n": [9]})  # no time column: pytd adds the current time
    td.load_table_from_dataframe(third, f"{db}.people", writer="bulk_import", if_exists="overwrite")
    got = td.query("SELECT name, n FROM people")
    assert got == {"data": [["z", 9]], "columns": ["name", "n"]}, got
    schema = {c[0]: c[1] for c in td.api_client.table(db, "people").schema}
    assert (schema.get("name"), schema.get("n"), "x" in schema) == ("string", "long", False), schema

    # The calls as pytd made them: sessions named session-<uuid1>, queries through the Hive path.
    calls = admin_requests()
    creates = [p for m, p in calls if m == "POST" and p.startswith("/v3/bulk_import/create/session-")]
    assert len(creates) == 3 and all(p.endswith(f"/{db}/people") for p in creates), creates
    assert calls.count(("POST", f"/v3/job/issue/hive/{db}")) == 2, calls
    assert not [b.name for b in td.api_client.bulk_imports() if b.database == db], "pytd deletes its sessions"
    td.close()
    client().delete_database(db)


CHECKS = [
    check_databases,
    check_tables,
    check_table_create_settings_and_expiry,
    check_import_data,
    check_bulk_import,
    check_schema_tuples_and_mistyped_values,
    check_query_results,
    check_download_job_result,
    check_query_with_result_url,
    check_query_into_a_saved_result_or_a_connection,
    check_scheduled_query_with_a_result,
    check_saved_results,
    check_result_export,
    check_error_classes,
    check_pytd_bulk_import_append_overwrite_and_hive_query,
]


def main():
    only = set(sys.argv[1:])
    passed = failed = 0
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        if only and name not in only:
            continue
        try:
            check()
        except Exception as e:  # one failing check must not hide the others
            failed += 1
            ours = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            line = ours[-1].lineno if ours else "?"
            print(f"FAIL {name}: {type(e).__name__}: {e} (compat.py line {line})", flush=True)
        else:
            passed += 1
            print(f"ok   {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
