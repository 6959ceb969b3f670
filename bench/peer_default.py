"""The default peer: the same transfer written with the official Python client (`pip install
td-client`) the way its documentation shows it, with the client's defaults everywhere.

What it follows (td-client-python, README.rst and the functions it calls; td-client 1.7.0):
- README.rst, "Running jobs": `for row in job.result()` — `Job.result` (tdclient/job_model.py)
  streams the result through `job_result_each` → `job_result_format_each(job_id, "msgpack")`
  (tdclient/job_api.py), defaults (no temporary file).
- README.rst, "Bulk import", the msgpack example: `td.create_bulk_import(session_name, db, table)`,
  `_bytes = tdclient.util.create_msgpack(l1)` over a list of dicts carrying `time`,
  `bulk_import.upload_file(part_name, "msgpack", io.BytesIO(_bytes))` (tdclient/bulk_import_model.py
  `BulkImport.upload_file` → `bulk_import_api.py` `bulk_import_upload_file`: it unpacks the msgpack,
  validates each record, packs it again and gzips it at `gzip.GzipFile`'s default level 9 into a
  temporary file, then `upload_part`s that), `freeze()`, `perform(wait=True)` (`BulkImport.perform`:
  `wait_interval=5` by default), the `error_records` / `valid_records` check, `commit(wait=True)`
  (`BulkImport.commit`: `wait_interval=5`), `delete()`.

What the documentation leaves open, done the plainest way:
- A result row is a list; the example's records are dicts: `dict(zip(names, row))` with the names of
  `job.result_schema` (the result has a `time` column, so every record carries it).
- The example uploads one part. td-local refuses a part over 128 MiB and 10M rows of this shape make
  more than that, so the rows go into one part per PART_ROWS rows (a round number; at this shape a
  part of about the operator's 16 MB), each built as the example builds its one part.
- The README's session name is `"session-{}".format(uuid.uuid1())`; td-local (like TD's name rule
  `^[a-z0-9_]{3,128}$`) takes no `-`, so it is `session_<uuid hex>`.
- The target table is created first with `create_log_table` (the bulk import needs it).

Usage (bench/run passes these): TD_LOCAL_URL, SOURCE_KEY, TARGET_KEY in the environment;
  peer_default.py JOB_ID DATABASE TABLE
Prints `rows=N` and `parts=N` on success.
"""

import io
import os
import sys
import uuid

import tdclient
import tdclient.util
from tdclient import errors

PART_ROWS = 1_000_000


def main():
    job_id, database, table = sys.argv[1], sys.argv[2], sys.argv[3]
    endpoint = os.environ["TD_LOCAL_URL"]
    with tdclient.Client(apikey=os.environ["SOURCE_KEY"], endpoint=endpoint) as source, tdclient.Client(
        apikey=os.environ["TARGET_KEY"], endpoint=endpoint
    ) as td:
        job = source.job(job_id)
        names = [name for name, _type in job.result_schema]

        try:
            td.create_log_table(database, table)
        except errors.AlreadyExistsError:
            pass
        session_name = "session_{}".format(uuid.uuid1().hex)
        bulk_import = td.create_bulk_import(session_name, database, table)
        rows = 0
        parts = 0
        try:
            l1 = []
            for row in job.result():
                l1.append(dict(zip(names, row)))
                rows += 1
                if len(l1) == PART_ROWS:
                    _bytes = tdclient.util.create_msgpack(l1)
                    bulk_import.upload_file("part_{:06d}".format(parts), "msgpack", io.BytesIO(_bytes))
                    parts += 1
                    l1 = []
            if l1:
                _bytes = tdclient.util.create_msgpack(l1)
                bulk_import.upload_file("part_{:06d}".format(parts), "msgpack", io.BytesIO(_bytes))
                parts += 1
            bulk_import.freeze()
        except BaseException:
            bulk_import.delete()
            raise
        bulk_import.perform(wait=True)
        if 0 < bulk_import.error_records or bulk_import.valid_records != rows:
            raise SystemExit(
                f"perform kept {bulk_import.valid_records} rows and rejected {bulk_import.error_records}, "
                f"not {rows} and 0"
            )
        bulk_import.commit(wait=True)
        bulk_import.delete()
        print(f"rows={rows}")
        print(f"parts={parts}")


if __name__ == "__main__":
    main()
