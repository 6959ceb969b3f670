"""The tuned peer: the same transfer written with the official Python client (`pip install
td-client`), the way a careful TD user writes it today, tuned where the client lets one tune it
(peer_default.py is the same transfer as the client's documentation shows it, with its defaults).

Read the source job's result with `job.result()` (msgpack rows, streamed), turn each row into a map
keyed by the result's column names (with `time`), pack the maps into gzip'd msgpack parts of about
16 MB at the operator's gzip level (the level is a setting, not the implementation: the comparison
is about the rest), upload each part into a bulk-import session as soon as it is full, then freeze,
perform, check the counts and commit. Memory stays bounded by one part, like the operator's.

Usage (bench/run passes these): TD_LOCAL_URL, SOURCE_KEY, TARGET_KEY in the environment;
  peer_tuned.py JOB_ID DATABASE TABLE PART_LEVEL
Prints `rows=N` and `parts=N` on success.
"""

import gzip
import io
import os
import sys

import msgpack
import tdclient
from tdclient import errors

PART_BYTES = 16 << 20
BATCH_BYTES = 1 << 20  # many tiny writes into GzipFile are slow: gather rows first
WAIT_INTERVAL = 1  # seconds between polls of the perform job and the commit (the client's default: 5)


class PartWriter:
    """Gzip'd msgpack maps, cut into parts of about PART_BYTES compressed bytes."""

    def __init__(self, session, level):
        self.session = session
        self.level = level
        self.parts = 0
        self.batch = bytearray()
        self._open()

    def _open(self):
        self.buf = io.BytesIO()
        self.gz = gzip.GzipFile(fileobj=self.buf, mode="wb", compresslevel=self.level)
        self.has_rows = False

    def write(self, packed):
        self.batch += packed
        if len(self.batch) >= BATCH_BYTES:
            self._flush_batch()
            if self.buf.tell() >= PART_BYTES:
                self._upload()

    def _flush_batch(self):
        if self.batch:
            self.gz.write(self.batch)
            self.batch.clear()
            self.has_rows = True

    def _upload(self):
        self.gz.close()
        data = self.buf.getvalue()
        self.session.upload_part(f"part_{self.parts:06d}", data, len(data))
        self.parts += 1
        self._open()

    def close(self):
        self._flush_batch()
        if self.has_rows:
            self._upload()


def main():
    job_id, database, table, level = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    endpoint = os.environ["TD_LOCAL_URL"]
    with tdclient.Client(apikey=os.environ["SOURCE_KEY"], endpoint=endpoint) as source, tdclient.Client(
        apikey=os.environ["TARGET_KEY"], endpoint=endpoint
    ) as target:
        job = source.job(job_id)
        columns = [name for name, _type in job.result_schema]
        # A result without a `time` column gets the job's start time, as TD's own export does.
        fixed_time = None if "time" in columns else int(job.start_at.timestamp())

        try:
            target.create_log_table(database, table)
        except errors.AlreadyExistsError:
            pass
        session = target.create_bulk_import(f"peer_{table}", database, table)
        parts = PartWriter(session, level)
        packer = msgpack.Packer()
        rows = 0
        for row in job.result():
            record = dict(zip(columns, row))
            if fixed_time is not None:
                record["time"] = fixed_time
            parts.write(packer.pack(record))
            rows += 1
        parts.close()

        session.freeze()
        session.perform(wait=True, wait_interval=WAIT_INTERVAL)
        if session.error_records != 0 or session.valid_records != rows:
            raise SystemExit(
                f"perform kept {session.valid_records} rows and rejected {session.error_records}, "
                f"not {rows} and 0"
            )
        session.commit(wait=True, wait_interval=WAIT_INTERVAL)
        print(f"rows={rows}")
        print(f"parts={parts.parts}")


if __name__ == "__main__":
    main()
