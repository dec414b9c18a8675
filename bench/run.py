"""Runs the benchmark modules (`bench/bench_*.py`) and records their figures.

Each module exposes `run(quick: bool = False) -> list[dict]`; a row is
`{name, value, unit, target, higher_is_better, runs, note}`. Results of the modules that ran are merged into
`bench/results.json` (keyed by module, with machine facts and a timestamp) and the table between the markers in
`docs/benchmarks.md` is rewritten from the whole file, so the page always shows the latest figure of every bench.

Usage: `python bench/run.py [--quick] [module ...]` (modules by short name: chunk, schema, ingest, ...).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
DOC = HERE.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(name: str):
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(mod)
    return mod


def _status(row: dict) -> str:
    target = row.get("target")
    if target is None:
        return ""
    ok = row["value"] >= target if row.get("higher_is_better", True) else row["value"] <= target
    return "met" if ok else "**missed**"


def _fmt(v: float) -> str:
    if v == 0 or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.4g}"


def render_table(results: dict) -> str:
    lines = []
    for module, entry in sorted(results.items()):
        lines.append(f"### {module}")
        lines.append("")
        lines.append(f"Measured {entry['when']} on {entry['machine']}.")
        lines.append("")
        lines.append("| benchmark | value | unit | target | status | runs | note |")
        lines.append("|---|---:|---|---:|---|---:|---|")
        for r in entry["rows"]:
            target = "" if r.get("target") is None else _fmt(r["target"])
            lines.append(
                f"| {r['name']} | {_fmt(r['value'])} | {r['unit']} | {target} | {_status(r)} | "
                f"{r.get('runs', '')} | {r.get('note', '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_doc(results: dict) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{render_table(results)}\n{END}{tail}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer runs and smaller sizes (a smoke run)")
    ap.add_argument("modules", nargs="*")
    args = ap.parse_args()
    names = args.modules or sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    failed = []
    sys.path.insert(0, str(HERE))
    for name in names:
        print(f"== bench {name}", flush=True)
        t = time.perf_counter()
        try:
            rows = _load(name).run(quick=args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for r in rows:
            print(
                f"  {r['name']}: {_fmt(r['value'])} {r['unit']} {_status(r)} {r.get('note', '')}", flush=True
            )
        results[name] = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine,
            "quick": args.quick,
            "seconds": round(time.perf_counter() - t, 1),
            "rows": rows,
        }
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_doc(results)
    print(f"results: {RESULTS}\nsummary: {DOC}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
