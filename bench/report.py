"""Renders bench/run's measurements as the markdown report (see bench/README.md for how to read it).

Usage: report.py FACTS RUNS_TSV
  FACTS     "group.key=value" lines (machine, setup, td-local timings)
  RUNS_TSV  one line per timed run: name, run, rows, wall_s, user_s, sys_s, maxrss_kb, tdlocal_cpu_s
"""

import csv
import statistics
import sys
from collections import defaultdict

CONTENDERS = [
    ("floor", "floor: gunzip + gzip (flate2, in process)"),
    ("floor_shell", "floor: `gzip -dc | gzip -{level}` (reference)"),
    ("operator", "**operator** (`td-result-export run`, stream)"),
    ("operator_fastpoll", "operator, waits ×0.05 (`TDRE_TIME_SCALE=0.05`)"),
    ("peer", "peer: td-client (Python) script"),
]


def read_facts(path):
    facts = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            facts.setdefault(key, value)
    return facts


def read_runs(path):
    runs = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            runs[row["name"]].append(
                {
                    "rows": int(row["rows"]),
                    "wall": float(row["wall_s"]),
                    "cpu": float(row["user_s"]) + float(row["sys_s"]),
                    "user": float(row["user_s"]),
                    "sys": float(row["sys_s"]),
                    "rss_mb": int(row["maxrss_kb"]) / 1024,
                    "server_cpu": float(row["tdlocal_cpu_s"]),
                    "run": row["run"],
                }
            )
    return runs


def median(runs, metric):
    return statistics.median(r[metric] for r in runs)


def summary(runs):
    """Median of each metric on its own, over the runs of one contender."""
    rows = runs[0]["rows"]
    wall, cpu = median(runs, "wall"), median(runs, "cpu")
    return {
        "rows": rows,
        "wall": wall,
        "cpu": cpu,
        "rss_mb": median(runs, "rss_mb"),
        "server_cpu": median(runs, "server_cpu"),
        "rows_per_s": per(rows, wall),
        "rows_per_cpu_s": per(rows, cpu),
    }


def per(amount, seconds):
    """A rate; GNU time reports wall to 10 ms, so a tiny run can take "0.00" s."""
    return amount / seconds if seconds else float("inf")


def num(x, digits=2):
    return f"{x:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "n/a"


def main():
    facts = read_facts(sys.argv[1])
    runs = read_runs(sys.argv[2])
    s = {name: summary(r) for name, r in runs.items()}
    rows, big, level = int(facts["setup.rows"]), int(facts["setup.big_rows"]), facts["setup.part_level"]
    result_mb = int(facts["result.bytes"]) / 2**20
    out = []
    w = out.append

    w(f"# td-result-export benchmark, {facts['machine.date']}")
    w("")
    w(
        f"{rows:,} rows shaped like `sample_datasets.www_access`, the result of "
        f"`SELECT * FROM www_access LIMIT {rows}` in td-local ({result_mb:,.1f} MiB msgpack.gz), appended "
        f"into a fresh table of another account (account 2) each run. Median of {facts['setup.runs']} runs; "
        f"parts are gzip level {level}. How to read this: bench/README.md."
    )
    w("")
    w(
        f"Machine: {facts['machine.cpu']}, {facts['machine.cores']} cores (shared; load average at start "
        f"{facts['machine.load']}), {facts['machine.kernel']}, {facts['machine.rustc']}, "
        f"{facts['machine.python']}, td-client {facts['machine.td_client']}, commit `{facts['machine.commit']}`."
    )
    w("")

    w("## The transfer")
    w("")
    w("| | rows/s (wall) | rows per CPU-second | wall s | CPU s (user+sys) | peak RSS MiB | td-local CPU s |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in CONTENDERS:
        if name not in s:
            continue
        m = s[name]
        w(
            f"| {label.format(level=level)} | {num(m['rows_per_s'], 0)} | {num(m['rows_per_cpu_s'], 0)} | "
            f"{num(m['wall'])} | {num(m['cpu'])} | {num(m['rss_mb'], 1)} | {num(m['server_cpu'])} |"
        )
    w("")
    w(
        "CPU and peak RSS are the measured process and its children only (GNU time); td-local runs in its "
        "own process and its CPU over the same span is the last column (the floor touches no server)."
    )
    w("")

    op, floor, peer = s.get("operator"), s.get("floor"), s.get("peer")
    if op and floor and peer:
        w("## Ratios (operator ÷ other: below 1 the operator spends less)")
        w("")
        w("| | CPU s | wall s | peak RSS |")
        w("|---|---:|---:|---:|")
        w(
            f"| operator ÷ floor | {ratio(op['cpu'], floor['cpu'])} | {ratio(op['wall'], floor['wall'])} | "
            f"{ratio(op['rss_mb'], floor['rss_mb'])} |"
        )
        w(
            f"| operator ÷ peer | {ratio(op['cpu'], peer['cpu'])} | {ratio(op['wall'], peer['wall'])} | "
            f"{ratio(op['rss_mb'], peer['rss_mb'])} |"
        )
        w("")
        w(
            f"The operator takes {op['wall'] / peer['wall']:.2f}× the Python client's wall time and "
            f"{op['cpu'] / peer['cpu']:.2f}× its CPU, and spends {op['cpu'] / floor['cpu']:.2f}× the CPU of "
            f"gunzip + gzip alone."
        )
        w("")

    if "floor.raw_bytes" in facts and "operator.bytes_out" in facts:
        mib = lambda key: int(facts[key]) / 2**20  # noqa: E731
        w(
            f"Bytes: the result is {result_mb:,.1f} MiB gzip'd, {mib('floor.raw_bytes'):,.1f} MiB of msgpack "
            f"arrays; the floor writes {mib('floor.out_bytes'):,.1f} MiB of parts, the operator "
            f"{mib('operator.bytes_out'):,.1f} MiB (maps: every row carries its column names, so the operator "
            f"compresses more bytes than the floor does)."
        )
        w("")

    big_op = s.get("operator_3n")
    if op and big_op:
        w("## Memory stays flat")
        w("")
        w("| result rows | operator peak RSS MiB | operator CPU s | runs |")
        w("|---:|---:|---:|---:|")
        w(f"| {rows:,} | {num(op['rss_mb'], 1)} | {num(op['cpu'])} | {len(runs['operator'])} (median) |")
        w(f"| {big:,} | {num(big_op['rss_mb'], 1)} | {num(big_op['cpu'])} | {len(runs['operator_3n'])} |")
        w("")
        w(
            f"{big / rows:.0f}× the rows: {big_op['rss_mb'] / op['rss_mb']:.2f}× the peak RSS, "
            f"{big_op['cpu'] / op['cpu']:.2f}× the CPU."
        )
        w("")

    w("## td-local's own speed")
    w("")
    w("| step | seconds | rate |")
    w("|---|---:|---:|")
    load_mb = int(facts["load.part_bytes"]) / 2**20
    upload = float(facts["load.upload_seconds"])
    w(
        f"| bulk import {rows:,} rows: upload {facts['load.parts']} parts ({load_mb:,.1f} MiB) | "
        f"{num(upload)} | {num(per(load_mb, upload), 1)} MiB/s |"
    )
    for step in ("perform", "commit"):
        secs = float(facts[f"load.{step}_seconds"])
        w(f"| bulk import: {step} | {num(secs)} | {num(per(rows, secs), 0)} rows/s |")
    total = float(facts["load.seconds"])
    w(f"| bulk import: total | {num(total)} | {num(per(rows, total), 0)} rows/s |")
    rest_rows, rest = int(facts["load_rest.rows"]), float(facts["load_rest.seconds"])
    w(
        f"| bulk import {rest_rows:,} more rows into the same table (for the {big:,}-row job): total | "
        f"{num(rest)} | {num(per(rest_rows, rest), 0)} rows/s |"
    )
    query = float(facts["query.seconds"])
    w(f"| `SELECT * … LIMIT {rows:,}` (issue → success) | {num(query)} | {num(per(rows, query), 0)} rows/s |")
    query_big = float(facts["query_big.seconds"])
    w(f"| `SELECT *` of {big:,} rows (issue → success) | {num(query_big)} | {num(per(big, query_big), 0)} rows/s |")
    downloads = [float(v) for k, v in facts.items() if k.startswith("download.") and k.endswith(".seconds")]
    if downloads:
        dl = statistics.median(downloads)
        w(
            f"| download the msgpack.gz result ({result_mb:,.1f} MiB; median) | {num(dl, 3)} | "
            f"{num(per(result_mb, dl), 1)} MiB/s, {num(per(rows, dl), 0)} rows/s |"
        )
    w(f"| td-local peak RSS over the whole benchmark | | {num(int(facts['tdlocal.peak_rss_kb']) / 1024, 1)} MiB |")
    w("")

    w("## Every run")
    w("")
    w("| measurement | run | rows | wall s | user s | sys s | peak RSS MiB | td-local CPU s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in runs.items():
        for r in rs:
            w(
                f"| {name} | {r['run']} | {r['rows']:,} | {num(r['wall'])} | {num(r['user'])} | "
                f"{num(r['sys'])} | {num(r['rss_mb'], 1)} | {num(r['server_cpu'])} |"
            )
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
