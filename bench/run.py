"""``make bench``: run the benchmarks, write bench/results/latest.json, print a Markdown table.

    python -m bench.run [--only NAME[,NAME]] [--size full|smoke] [--output PATH]

Each benchmark measures Sextant and its baseline in the same run and reports rows of ``name``,
``unit``, ``sextant``, ``baseline_name``, ``baseline``, ``ratio`` (> 1: Sextant better; for
"lower is better" units the ratio is baseline / Sextant, see ``better``) and extra fields. With
``--only`` the rows of the other benchmarks already in the output file are kept. A benchmark that
fails is reported and the run exits 1 after the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import SIZES, machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"
README = Path(__file__).resolve().parent / "README.md"
TABLE_START, TABLE_END = "<!-- latest-table -->", "<!-- /latest-table -->"
BENCHMARKS = {
    "ingest": "bench.ingest",
    "tracking": "bench.tracking",
    "portal": "bench.portal",
    "online": "bench.online",
    "batch": "bench.batch",
}
# Named in the issue, not measurable yet.
MISSING = {"features": "the Feature Store does not exist yet (no backend/features): nothing to measure"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    parser.add_argument("--size", choices=SIZES, default="full", help="smoke: tiny sizes that finish in seconds")
    parser.add_argument(
        "--output", type=Path, default=None, help=f"default: {LATEST} (full size), a temp folder (smoke size)"
    )
    args = parser.parse_args(argv)
    if args.output is None:
        # Smoke figures mean nothing: they never replace the results of a real run.
        args.output = (
            LATEST if args.size == "full" else Path(tempfile.gettempdir()) / "sextant-bench-smoke" / "latest.json"
        )
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    for name in names:
        if name in MISSING:
            parser.error(f"{name}: {MISSING[name]}")
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    args.names = names
    return args


def format_number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | unit | Sextant | baseline | baseline value | ratio (> 1: Sextant better) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        side = f" ({row['sextant_side']})" if "sextant_side" in row else ""
        lines.append(
            f"| {row['name']}{side} | {row['unit']} ({row['better']} is better) | {format_number(row['sextant'])} | "
            f"{row['baseline_name']} | {format_number(row['baseline'])} | {row['ratio']:.3g}× |"
        )
    return "\n".join(lines)


def update_readme(rows: list[dict[str, Any]], meta: dict[str, Any], readme: Path = README) -> None:
    """Put the table of a complete full-size run into bench/README.md, with the machine it ran on."""
    info = meta["machine"]
    run = meta["last_run"]
    seconds = ", ".join(f"{name} {value['seconds']:.0f} s" for name, value in meta["benchmarks"].items())
    parts = [
        TABLE_START,
        f"Run of {run['date']} on {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, "
        f"Python {info['python']}: `make bench` took {run['seconds']:.0f} s ({seconds}).",
        "",
        markdown_table(rows),
    ]
    online = importlib.import_module("bench.online").summary_table(rows)
    if online:
        parts += ["", "Every online serving path of the same run:", "", online]
    parts.append(TABLE_END)
    text = readme.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    readme.write_text(text[:start] + "\n".join(parts) + text[end:])


def merged(previous: list[dict[str, Any]], new: list[dict[str, Any]], ran: list[str]) -> list[dict[str, Any]]:
    """The new rows, plus earlier rows of benchmarks that did not run now, in the benchmarks' order."""
    kept = [row for row in previous if row.get("benchmark") not in ran]
    everything = kept + new
    order = list(BENCHMARKS)
    return sorted(everything, key=lambda row: order.index(row["benchmark"]) if row.get("benchmark") in order else 99)


def stop_on_sigterm(_signum: int, _frame: object) -> None:
    # Unwinds like Ctrl-C, so every benchmark's finally blocks stop the servers it started; a second
    # SIGTERM must not cut that cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in args.names:
        print(f"== {name} ({args.size})", flush=True)
        begin = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            for result in module.run(args.size):
                rows.append({**result.as_dict(), "benchmark": name, "size": args.size})
        except Exception as error:
            traceback.print_exc()
            failures[name] = f"{type(error).__name__}: {error}".splitlines()[0]
        timings[name] = round(time.perf_counter() - begin, 1)
        print(f"   {name}: {timings[name]} s", flush=True)
    total = round(time.perf_counter() - started, 1)
    previous: list[dict[str, Any]] = []
    if args.output.exists() and set(args.names) != set(BENCHMARKS):
        previous = json.loads(args.output.read_text())
    output_rows = merged(previous, rows, [name for name in args.names if name not in failures])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_suffix(".json.tmp")
    partial.write_text(json.dumps(output_rows, indent=2) + "\n")
    partial.replace(args.output)
    meta_path = args.output.with_name(args.output.stem + ".meta.json")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    benchmarks = json.loads(meta_path.read_text()).get("benchmarks", {}) if previous and meta_path.exists() else {}
    benchmarks.update({name: {"seconds": timings[name], "date": now, "size": args.size} for name in timings
                       if name not in failures})  # fmt: skip
    meta = {
        "last_run": {"date": now, "size": args.size, "benchmarks": args.names, "seconds": total, "failures": failures},
        "machine": machine(),
        "benchmarks": benchmarks,
        "not_measured": MISSING,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if args.output == LATEST and args.size == "full" and set(args.names) == set(BENCHMARKS) and not failures:
        update_readme(output_rows, meta)
    print()
    print(markdown_table(rows))
    online = importlib.import_module("bench.online").summary_table(rows)
    if online:
        print("\nOnline serving paths (same run):\n")
        print(online)
    info = meta["machine"]
    print(f"\nmachine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB; total {total} s")
    print(f"results: {args.output}")
    for name, reason in MISSING.items():
        print(f"not measured: {name}: {reason}")
    for name, reason in failures.items():
        print(f"FAILED: {name}: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
