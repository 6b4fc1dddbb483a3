"""How reports look: rich tables for people, JSON (bytes, stable keys) for scripts."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def console() -> Console:
    # Piped output (scripts, tests) must not be wrapped at 80 columns or coloured.
    if sys.stdout.isatty():
        return Console()
    width = max(shutil.get_terminal_size((160, 24)).columns, 160)
    return Console(width=width, no_color=True, highlight=False, force_terminal=False)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _errors(disk: dict[str, Any]) -> str:
    return "/".join(str(disk.get(k, 0)) for k in ("read_errors", "write_errors",
                                                   "checksum_errors"))


def disks_table(disks: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify in (("id", "right"), ("path", "left"), ("tier", "left"),
                          ("state", "left"), ("capacity", "right"), ("used", "right"),
                          ("free", "right"), ("fragments", "right"),
                          ("errors r/w/c", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "path")  # type: ignore[arg-type]
    for d in disks:
        capacity = human_size(d.get("capacity"))
        if d.get("capacity_cap"):
            capacity += " (cap)"
        # Text, not str: rich would read a path like /srv/disk[1] as markup.
        cells = (d.get("id"), d.get("path"), d.get("tier"), d.get("state"), capacity,
                 human_size(d.get("used")), human_size(d.get("free")), d.get("fragments", 0),
                 _errors(d))
        table.add_row(*(Text(str(c)) for c in cells))
    return table


def print_disks(disks: list[dict[str, Any]]) -> None:
    out = console()
    if not disks:
        out.print("no disks; add one with 'dynamicfs add-disk POOL PATH'")
        return
    out.print(disks_table(disks))
    for d in disks:
        if d.get("problem"):
            out.print(f"disk {d.get('id')}: {d['problem']}", markup=False)


# Status keys shown in this order with these labels; sizes are formatted, anything the engine
# adds later is still shown after them.
_STATUS_ROWS = (
    ("pool", "pool", None), ("uuid", "uuid", None), ("policy", "policy", None),
    ("block_size", "block size", "size"), ("health", "health", None),
    ("disks", "disks", None), ("disks_online", "disks online", None),
    ("capacity", "capacity", "size"), ("free", "free", "size"),
    ("usable_capacity", "usable capacity", "size"), ("usable_free", "usable free", "size"),
    ("inodes", "inodes", None),
    ("extents", "extents", None), ("fragments", "fragments", None),
    ("referenced_bytes", "file data", "size"), ("unique_bytes", "after dedup", "size"),
    ("stored_bytes", "stored", "size"),
)
_HIDDEN = {"mounted", "mountpoint", "pid", "source"}


def _flatten(label: str, value: Any) -> list[tuple[str, str]]:
    """Nested reports (cache, counters) as one "section item" row per leaf."""
    if isinstance(value, dict):
        if not value:
            return [(label, "-")]
        rows: list[tuple[str, str]] = []
        for key in sorted(value):
            rows.extend(_flatten(f"{label} {key.replace('_', ' ')}", value[key]))
        return rows
    if isinstance(value, list):
        return [(label, json.dumps(value, sort_keys=True))]
    if isinstance(value, int) and not isinstance(value, bool) and "bytes" in label:
        return [(label, human_size(value))]
    return [(label, str(value))]


def print_status(report: dict[str, Any]) -> None:
    if report.get("mounted"):
        where = f"mounted on {report.get('mountpoint')} (daemon pid {report.get('pid')})"
    else:
        where = "not mounted"
    rows = [("state", where)]
    shown = set(_HIDDEN)
    for key, label, kind in _STATUS_ROWS:
        if key in report:
            value = report[key]
            rows.append((label, human_size(value) if kind == "size" else str(value)))
            shown.add(key)
    for key in sorted(set(report) - shown):
        rows.extend(_flatten(key.replace("_", " "), report[key]))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


# -- maintenance reports ----------------------------------------------------------------------

def _problems_table(problems: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("problem")
    for p in problems:
        table.add_row(Text(p["check"]), Text(p["message"]))
    return table


def print_fsck(report: dict[str, Any]) -> None:
    out = console()
    restored = report.get("restored")
    if restored:
        out.print(f"restored {report['pool']}/meta.db from {restored['copy']} (taken "
                  f"{human_age(restored['age_seconds'])} ago on disk {restored['disk']})",
                  markup=False)
        if restored.get("damaged"):
            out.print(f"the previous database was kept as {restored['damaged']}; it was "
                      f"replaced because: {restored['reason']}", markup=False)
        if report["problems"]:
            out.print("the copy predates the pool's last changes: run 'dynamicfs fsck POOL "
                      "--rebuild-metadata' to reconcile it with the disks (newer data is kept "
                      "in /lost+found/extents), or --repair to keep only what the copy knows",
                      markup=False)
    rebuilt = report.get("rebuilt")
    if rebuilt:
        for line in rebuilt_lines(rebuilt):
            out.print(line, markup=False)
    problems = report["problems"]
    if not problems:
        out.print(f"pool {report['pool']}: no problems found ({len(report['checks'])} checks)",
                  markup=False)
        return
    out.print(f"{len(problems)} problems found:")
    out.print(_problems_table(problems))
    if "repairs" in report:
        for r in report["repairs"]:
            loss = "DATA LOSS: " if r["data_loss"] else ""
            out.print(f"repaired [{r['check']}] {loss}{r['action']}", markup=False)
        remaining = report["remaining"]
        if remaining:
            out.print(f"{len(remaining)} problems remain (not safely repairable):")
            out.print(_problems_table(remaining))
        else:
            out.print("all problems repaired; the pool is consistent")


def rebuilt_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"rebuilt the extent and fragment tables from {r['fragments']} fragment headers "
             f"on {r['disks_scanned']} disks (base: {r['base']}): {r['extents']} extents"]
    if r["disks_added"]:
        lines.append(f"registered disks the database did not know: {', '.join(r['disks_added'])}")
    guessed = r.get("guessed_settings")
    if guessed:
        lines.append(f"the pool's settings were lost: guessed block size "
                     f"{human_size(guessed['block_size'])} and policy {guessed['policy']} "
                     f"(from the extents found)")
    if r["bad_fragments"]:
        lines.append(f"{r['bad_fragments']} fragment files were unusable (bad header, size or "
                     f"checksum) and were left for gc")
    if r["incomplete_extents"]:
        lines.append(f"{r['incomplete_extents']} extents had too few good fragments to read")
    for hole in r["holes"]:
        lines.append(f"DATA LOSS: {hole['path']} block {hole['block']}: its extent exists "
                     f"nowhere; it now reads as zeros")
    if r["unattached_extents"]:
        lines.append(f"{r['unattached_extents']} extents ({human_size(r['unattached_bytes'])}) "
                     f"belong to no file: kept as files in {r['unattached_dir']}")
    return lines


def human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def fault_text(f: dict[str, Any]) -> str:
    import errno as errno_mod

    what = {"error": f"fail with {errno_mod.errorcode.get(f['errno'], f['errno'])}",
            "corrupt": "corrupt the data read", "hang": f"hang {f['seconds']:g} s"}[f["kind"]]
    times = "until cleared" if f.get("count") is None else f"{f['count']} more times"
    chance = "" if f.get("probability", 1.0) >= 1.0 else f", probability {f['probability']:g}"
    return f"{f['op']}: {what}, {times}{chance}"


def print_faults(faults: list[dict[str, Any]]) -> None:
    if not faults:
        print("no faults armed")
        return
    for f in faults:
        print(f"disk {f['disk']}: {fault_text(f)}")
