"""`ganrun-report <multirun dir>`: the command around ganrun.analysis.report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganrun.analysis.report import NothingToRank, report
from ganrun.analysis.report import __doc__ as REPORT_DOC


def main() -> None:
    parser = argparse.ArgumentParser(prog="ganrun-report", description=REPORT_DOC.split("\n")[0])
    parser.add_argument("sweep", help="a multirun directory (outputs/multiruns/<stamp>)")
    parser.add_argument("--metric", default=None,
                        help="metric to sort and plot by (default: per group of jobs evaluated "
                             "alike, the first of fid, kid, modes, classes_covered, is logged, "
                             "else loss/g)")
    parser.add_argument("--columns", default=None,
                        help="metrics shown in report.md, comma-separated, or 'all' (default: "
                             "the ranking metric and its companions, e.g. fid with kid, "
                             "precision, recall; report.csv always has all)")
    parser.add_argument("--html", action="store_true",
                        help="also write report.html: the tables, curves, last samples and "
                             "health warnings on one self-contained page (open it as a file)")
    args = parser.parse_args()
    columns = args.columns.split(",") if args.columns else None
    try:
        _, _, written = report(args.sweep, args.metric, columns, args.html)
    except (FileNotFoundError, KeyError) as e:
        if isinstance(e, NothingToRank):  # the job list is still worth reading
            print((Path(args.sweep) / "report.md").read_text())
        print(f"ganrun-report: error: {str(e).strip(chr(39) + chr(34))}", file=sys.stderr)
        sys.exit(1)
    print((Path(args.sweep) / "report.md").read_text())
    print("written: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
