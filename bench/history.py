"""Appends a benchmark report's headline numbers to bench/results/history.csv: one line per size
of the report's "Across sizes" table, with the run's time and commit. bench/run calls it after
each recorded run; the full report of the latest run is bench/results/latest.md (earlier reports
are in git history).

Usage: python3 bench/history.py REPORT.md [REPORT.md ...] --csv bench/results/history.csv
"""

import argparse
import csv
import os
import re
import sys

COLUMNS = [
    "run_at_utc",
    "commit",
    "rows",
    "operator_peak_rss_mib",
    "operator_wall_s",
    "operator_cpu_s",
    "transfer_phase_rows_per_s",
    "floor_rows_per_s",
    "td_local_peak_rss_mib",
]


def headline(text):
    """(run time, commit, [rows of the Across sizes table]) of a report, or None."""
    when = re.search(r"^# td-result-export benchmark, (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC", text, re.M)
    commit = re.search(r"commit `([^`]+)`", text)
    table = re.search(r"^## Across sizes\n\n\| rows \|[^\n]*\n\|[-:| ]+\|\n((?:\|[^\n]*\n?)+)", text, re.M)
    if not (when and commit):
        return None
    if not table:
        one = single_size(text)
        return (when.group(1), commit.group(1), [one]) if one else None
    rows = []
    for line in table.group(1).strip().splitlines():
        cells = [c.strip().replace(",", "") for c in line.strip("|").split("|")]
        rows.append(cells[:7])
    return when.group(1), commit.group(1), rows


def single_size(text):
    """The headline cells of a report of one size (it has no "Across sizes" table): read from its
    transfer table and the td-local memory target."""
    size = re.search(r"^## ([\d,]+) rows$", text, re.M)
    def row(label):
        line = re.search(r"^\| " + re.escape(label) + r"[^|]*\|([^\n]*)$", text, re.M)
        return [c.strip().replace(",", "") for c in line.group(1).strip("|").split("|")] if line else None
    operator, phase, floor = row("**operator**"), row("**transfer phase**"), row("floor: gunzip + gzip")
    td_local = re.search(r"td-local peak RSS ≤ [^|]*\|[^|]*\| ([\d.]+) MiB", text)
    if not (size and operator and phase and floor and td_local):
        return None
    # operator: rows/s, rows per CPU-s, wall s, CPU s, peak RSS MiB, ...
    return [size.group(1).replace(",", ""), operator[4], operator[2], operator[3], phase[0], floor[0], td_local.group(1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--csv", required=True)
    args = parser.parse_args()
    new_file = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as out:
        writer = csv.writer(out)
        if new_file:
            writer.writerow(COLUMNS)
        for path in args.reports:
            with open(path) as f:
                found = headline(f.read())
            if found is None:
                print(f"history.py: {path} has no headline table (an older report format); skipped", file=sys.stderr)
                continue
            when, commit, rows = found
            for cells in rows:
                writer.writerow([when, commit] + cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
