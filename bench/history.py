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
    if not (when and commit and table):
        return None
    rows = []
    for line in table.group(1).strip().splitlines():
        cells = [c.strip().replace(",", "") for c in line.strip("|").split("|")]
        rows.append(cells[:7])
    return when.group(1), commit.group(1), rows


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
