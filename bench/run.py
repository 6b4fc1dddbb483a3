"""DynamicFS benchmark suite: raw directory vs pyfuse3 passthrough vs DynamicFS pools.

    .venv/bin/python bench/run.py [--rounds 3] [--quick] [--only WORKLOAD]
    .venv/bin/python bench/run.py --profile WORKLOAD [--profile-target rep:1|rep:2|ec:4+2]

Every workload runs on every target, interleaved, in an order rotated each round; the figure
kept is the median of the rounds, shown with its ratios to "raw" and to "passthrough". Results
go to bench/results/<timestamp>.json and docs/performance.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyspy_summary
from rich.console import Console
from rich.table import Table

from dynamicfs.daemon import GC_DELAY
from dynamicfs.engine.filesystem import DEFAULT_CACHE_SIZE

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DYNAMICFS = str(VENV_BIN / "dynamicfs")
PYTHON = str(VENV_BIN / "python")
# DYNAMICFS_BENCH_DIR moves everything (two runs at once must not share a directory).
BASE = Path(os.environ.get("DYNAMICFS_BENCH_DIR", "/var/tmp/dynamicfs-bench"))
ANALYSIS = Path(__file__).with_name("ANALYSIS.md")
RESULTS = REPO / "bench" / "results"
REPORT = REPO / "docs" / "performance.md"
MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_CACHE_MIB = DEFAULT_CACHE_SIZE // MiB  # a mount without -o cache_size=

console = Console()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


# -- targets ---------------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[int, float]:
    """(VmHWM in KiB, utime+stime in seconds) of a live process."""
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return hwm, (int(rest[11]) + int(rest[12])) / CLK_TCK


@dataclass
class Target:
    name: str
    kind: str  # raw | passthrough | dynamicfs
    policy: str | None = None
    disks: int = 4
    peak_rss_kib: int = 0
    window_peak_kib: int = 0  # since start_window(): one workload's peak
    cpu_done: float = 0.0
    proc: subprocess.Popen | None = None
    _pid: int | None = None
    prefix: str = ""
    profiler: Profiler | None = None  # follows the daemon across remounts (profile mode)

    @property
    def slug(self) -> str:
        """The name as it appears in paths ("ec:4+2" -> "ec_4_2")."""
        return self.name.replace(":", "_").replace("+", "_")

    @property
    def root(self) -> Path:
        return BASE / (self.prefix + self.slug)

    @property
    def dir(self) -> Path:
        """Where workloads run."""
        return self.root / ("data" if self.kind == "raw" else "mnt")

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    def setup(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.dir.mkdir(parents=True)
        if self.kind == "passthrough":
            (self.root / "src").mkdir()
        elif self.kind == "dynamicfs":
            run([DYNAMICFS, "init", "--policy", self.policy, str(self.pool)])
            for i in range(self.disks):
                run([DYNAMICFS, "add-disk", str(self.pool), str(self.root / f"disk{i}")])
        self.mount()

    def mount(self) -> None:
        if self.kind == "passthrough":
            log = open(self.root / "passthrough.log", "ab")
            self.proc = subprocess.Popen(
                [PYTHON, str(REPO / "bench" / "passthrough.py"), str(self.root / "src"),
                 str(self.dir)], stdout=log, stderr=log, start_new_session=True)
            for _ in range(100):
                if os.path.ismount(self.dir):
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"passthrough exited: see {self.root / 'passthrough.log'}")
                time.sleep(0.05)
            else:
                raise RuntimeError("passthrough did not mount")
            self._pid = self.proc.pid
        elif self.kind == "dynamicfs":
            run([DYNAMICFS, "mount", str(self.pool), str(self.dir)])
            status = json.loads(run([DYNAMICFS, "status", "--json", str(self.pool)]).stdout)
            self._pid = status["pid"]
        if self.profiler is not None and self._pid is not None:
            self.profiler.attach(self._pid)

    def pid(self) -> int | None:
        return self._pid

    def cpu(self) -> float:
        """Daemon CPU seconds so far, across remounts."""
        if self._pid is None:
            return self.cpu_done
        with contextlib.suppress(OSError):
            return self.cpu_done + proc_stats(self._pid)[1]
        return self.cpu_done

    def sample(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(OSError):
                self._saw(proc_stats(self._pid)[0])

    def _saw(self, hwm_kib: int) -> None:
        self.peak_rss_kib = max(self.peak_rss_kib, hwm_kib)
        self.window_peak_kib = max(self.window_peak_kib, hwm_kib)

    def start_window(self) -> None:
        """Start measuring one workload's peak: VmHWM is reset to the current RSS
        (clear_refs 5), after its value so far went into the run's peak."""
        self.sample()
        self.window_peak_kib = 0
        if self._pid is not None:
            with contextlib.suppress(OSError):
                Path(f"/proc/{self._pid}/clear_refs").write_text("5\n")

    def unmount(self) -> None:
        if self.kind == "raw" or self._pid is None:
            return
        if self.profiler is not None:
            self.profiler.detach()
        with contextlib.suppress(OSError):
            hwm, cpu = proc_stats(self._pid)
            self._saw(hwm)
            self.cpu_done += cpu
        pid, self._pid = self._pid, None
        if self.kind == "dynamicfs":
            subprocess.run([DYNAMICFS, "umount", str(self.dir)], capture_output=True)
        else:
            subprocess.run(["umount", str(self.dir)], capture_output=True)
            if self.proc is not None:
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        for _ in range(100):  # the daemon exits after the unmount; wait so it is not counted twice
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)

    def cold(self) -> None:
        """Empty every cache: the daemon's own (by remounting) and the kernel's."""
        if self.kind != "raw":
            self.unmount()
            self.mount()
        drop_caches()


def make_targets(only: list[str] | None) -> list[Target]:
    ts = [
        Target("raw", "raw"),
        Target("passthrough", "passthrough"),
        Target("rep:1", "dynamicfs", "rep:1", 4),
        Target("rep:2", "dynamicfs", "rep:2", 4),
        # ec:4+2 needs 6 disks (DynamicFS refuses to mount it on 4).
        Target("ec:4+2", "dynamicfs", "ec:4+2", 6),
    ]
    return [t for t in ts if only is None or t.name in only]


def unmount_leftovers() -> None:
    """Unmount anything a previous, killed run left mounted under BASE."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        mp = line.split()[1]
        if mp.startswith(str(BASE)):
            subprocess.run(["umount", "-l", mp], capture_output=True)


# -- workloads -------------------------------------------------------------------------------


@dataclass
class Config:
    quick: bool
    runtime: int
    seq_size: int
    scan_files: int
    scan_small: int = 10_000
    meta_files: int = 5000
    small_files: int = 2000
    small_size: int = 16 << 10

    @property
    def tree_src(self) -> Path:
        return BASE / ("tree-src-quick" if self.quick else "tree-src")

    @property
    def tree_tar(self) -> Path:
        return BASE / ("tree-quick.tar" if self.quick else "tree.tar")


def fio(t: Target, *args: str) -> tuple[dict, float]:
    cmd = ["fio", "--output-format=json", "--ioengine=psync", "--fallocate=none",
           "--invalidate=0", "--group_reporting", *args]
    t0 = time.perf_counter()
    out = run(cmd, cwd=t.dir).stdout
    elapsed = time.perf_counter() - t0
    return json.loads(out[out.index("{"):]), elapsed


def ensure_file(t: Target, name: str, size: int) -> None:
    p = t.dir / name
    if not p.exists() or p.stat().st_size != size:
        fio(t, "--name=prep", f"--filename={name}", "--rw=write", "--bs=1M", f"--size={size}",
            "--end_fsync=1")


def wl_seqwrite(cfg: Config, t: Target) -> dict[str, float]:
    with contextlib.suppress(FileNotFoundError):
        (t.dir / "seq.dat").unlink()
    os.sync()
    _, el = fio(t, "--name=seqwrite", "--filename=seq.dat", "--rw=write", "--bs=1M",
                f"--size={cfg.seq_size}", "--end_fsync=1")
    return {"MiB/s": cfg.seq_size / MiB / el}


def wl_seqread(cfg: Config, t: Target) -> dict[str, float]:
    ensure_file(t, "seq.dat", cfg.seq_size)
    t.cold()
    r, _ = fio(t, "--name=seqread", "--filename=seq.dat", "--rw=read", "--bs=1M",
               f"--size={cfg.seq_size}")
    return {"MiB/s": r["jobs"][0]["read"]["bw_bytes"] / MiB}


def _randread(cfg: Config, t: Target, cold: bool) -> dict[str, float]:
    ensure_file(t, "rand.dat", 256 * MiB)
    if cold:
        t.cold()
    else:
        with open(t.dir / "rand.dat", "rb") as f:  # pull it into the page cache
            while f.read(4 * MiB):
                pass
    r, _ = fio(t, "--name=randread", "--filename=rand.dat", "--rw=randread", "--bs=4k",
               "--size=256M", "--time_based", f"--runtime={cfg.runtime}")
    return {"IOPS": r["jobs"][0]["read"]["iops"]}


def wl_randread_cold(cfg: Config, t: Target) -> dict[str, float]:
    return _randread(cfg, t, True)


def wl_randread_warm(cfg: Config, t: Target) -> dict[str, float]:
    return _randread(cfg, t, False)


def wl_randwrite(cfg: Config, t: Target) -> dict[str, float]:
    ensure_file(t, "randw.dat", 256 * MiB)
    r, el = fio(t, "--name=randwrite", "--filename=randw.dat", "--rw=randwrite", "--bs=4k",
                "--size=256M", "--time_based", f"--runtime={cfg.runtime}", "--end_fsync=1")
    # Over the wall time, so the final fsync counts.
    return {"IOPS": r["jobs"][0]["write"]["total_ios"] / el}


def wl_metadata(cfg: Config, t: Target) -> dict[str, float]:
    d = t.dir / "meta"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    names = [str(d / f"file{i:06d}") for i in range(cfg.meta_files)]
    n = len(names)
    os.sync()
    t0 = time.perf_counter()
    for p in names:
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    t1 = time.perf_counter()
    for p in names:
        os.lstat(p)
    t2 = time.perf_counter()
    drop_caches()
    t3 = time.perf_counter()
    for p in names:
        os.lstat(p)
    t4 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        listed = len(os.listdir(d))
    t5 = time.perf_counter()
    assert listed == n, (listed, n)
    for p in names:
        os.unlink(p)
    t6 = time.perf_counter()
    d.rmdir()
    return {"create/s": n / (t1 - t0), "stat warm/s": n / (t2 - t1),
            "stat cold/s": n / (t4 - t3), "list entries/s": reps * n / (t5 - t4),
            "unlink/s": n / (t6 - t5)}


def wl_smallfiles(cfg: Config, t: Target) -> dict[str, float]:
    d = t.dir / "small"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    names = [str(d / f"s{i:05d}") for i in range(cfg.small_files)]
    # Each file its own bytes: one buffer for all would let a deduplicating filesystem store
    # a single extent and skip the per-file data writes the workload is about.
    blobs = [os.urandom(cfg.small_size) for _ in names]
    os.sync()
    t0 = time.perf_counter()
    for p, blob in zip(names, blobs, strict=True):
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, blob)
        os.close(fd)
    t1 = time.perf_counter()
    t.cold()
    t2 = time.perf_counter()
    for p, blob in zip(names, blobs, strict=True):
        fd = os.open(p, os.O_RDONLY)
        assert os.read(fd, cfg.small_size + 1) == blob, p
        os.close(fd)
    t3 = time.perf_counter()
    shutil.rmtree(d)
    n = len(names)
    return {"write files/s": n / (t1 - t0), "read cold files/s": n / (t3 - t2)}


def prepare_tree(cfg: Config) -> None:
    """A real source tree (the venv's site-packages), as a directory and as a tarball.

    --quick keeps only the first packages, about 1,000 entries."""
    if cfg.tree_tar.exists() and cfg.tree_src.exists():
        return
    site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    if cfg.tree_src.exists():
        shutil.rmtree(cfg.tree_src)
    dst = cfg.tree_src / "site-packages"
    if cfg.quick:
        dst.mkdir(parents=True)
        n = 0
        for top in sorted(site.iterdir()):
            if n >= 1000:
                break
            if top.is_dir() and not top.is_symlink():
                shutil.copytree(top, dst / top.name, symlinks=True)
            else:
                shutil.copy2(top, dst / top.name, follow_symlinks=False)
            n += 1 + sum(len(fs) + len(ds) for _, ds, fs in os.walk(dst / top.name))
    else:
        shutil.copytree(site, dst, symlinks=True)
    with tarfile.open(cfg.tree_tar, "w") as tf:
        tf.add(dst, arcname="site-packages")


def wl_tree(cfg: Config, t: Target) -> dict[str, float]:
    prepare_tree(cfg)
    nfiles = sum(len(fs) + len(ds) for _, ds, fs in os.walk(cfg.tree_src))
    for sub in ("cp", "tar"):
        if (t.dir / sub).exists():
            shutil.rmtree(t.dir / sub)
    (t.dir / "tar").mkdir()
    os.sync()
    t0 = time.perf_counter()
    run(["cp", "-a", str(cfg.tree_src), str(t.dir / "cp")])
    t1 = time.perf_counter()
    run(["tar", "xf", str(cfg.tree_tar), "-C", str(t.dir / "tar")])
    t2 = time.perf_counter()
    shutil.rmtree(t.dir / "cp")
    shutil.rmtree(t.dir / "tar")
    return {"cp -a entries/s": nfiles / (t1 - t0), "tar x entries/s": nfiles / (t2 - t1)}


def wl_concurrency(cfg: Config, t: Target) -> dict[str, float]:
    res = {}
    for jobs in (1, 4):
        for p in t.dir.glob("conc.*"):
            p.unlink()
        os.sync()
        _, el = fio(t, "--name=conc", "--filename_format=conc.$jobnum", "--rw=write",
                    "--bs=1M", f"--size={cfg.seq_size // jobs}", f"--numjobs={jobs}",
                    "--end_fsync=1")
        res[f"{jobs} writer{'s' if jobs > 1 else ''} MiB/s"] = cfg.seq_size / MiB / el
    for p in t.dir.glob("conc.*"):
        p.unlink()
    res["4 vs 1"] = res["4 writers MiB/s"] / res["1 writer MiB/s"]
    return res


@dataclass
class Workload:
    name: str
    title: str
    fn: Callable[[Config, Target], dict[str, float]]
    uses_fio: bool = True


WORKLOADS = [
    Workload("seqwrite", "sequential write, 1 MiB blocks, fsync at end", wl_seqwrite),
    Workload("seqread", "sequential read, cold caches", wl_seqread),
    Workload("randread-cold", "random 4 KiB reads over 256 MiB, cold start", wl_randread_cold),
    Workload("randread-warm", "random 4 KiB reads over 256 MiB, warm", wl_randread_warm),
    Workload("randwrite", "random 4 KiB writes over 256 MiB, fsync at end", wl_randwrite),
    Workload("metadata", "create, stat, list, unlink 5,000 files in one directory", wl_metadata,
             uses_fio=False),
    Workload("smallfiles", "write and read back 2,000 files of 16 KiB", wl_smallfiles,
             uses_fio=False),
    Workload("tree", "cp -a and tar x of a source tree (site-packages; ~1,000 entries of it "
             "with --quick)", wl_tree, uses_fio=False),
    Workload("concurrency", "4 parallel sequential writers vs 1", wl_concurrency),
]
SCAN = "scan"


# -- the scan of a large pool ----------------------------------------------------------------


def fill(d: Path, start: int, stop: int) -> float:
    """Create files start..stop-1 under d, 1,000 per directory; returns creates/s."""
    t0 = time.perf_counter()
    for i in range(start, stop):
        sub = d / f"d{i // 1000:05d}"
        if i % 1000 == 0:
            sub.mkdir(exist_ok=True)
        os.close(os.open(sub / f"f{i % 1000:03d}", os.O_CREAT | os.O_WRONLY, 0o644))
    return (stop - start) / max(time.perf_counter() - t0, 1e-9)


def scan(t: Target, d: Path) -> tuple[int, float]:
    t.cold()
    t0 = time.perf_counter()
    out = run(["find", str(d), "-printf", "%s\n"]).stdout
    n = out.count("\n")
    return n, n / (time.perf_counter() - t0)


def meta_db_bytes(t: Target) -> int:
    return sum(p.stat().st_size for p in t.pool.glob("meta.db*") if p.is_file())


def run_scan(cfg: Config, targets: list[Target], rounds: int) -> dict:
    """Stat rate of a 10,000-file pool, then of the same pool grown to N files."""
    out: dict[str, dict] = {}
    for t in targets:
        console.print(f"[bold]scan[/] {t.name}: filling {cfg.scan_small:,} files")
        d = t.dir / "scan"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        create_rate = fill(d, 0, cfg.scan_small)
        small = [scan(t, d)[1] for _ in range(rounds)]
        db_small = meta_db_bytes(t) if t.kind == "dynamicfs" else None
        console.print(f"[bold]scan[/] {t.name}: growing to {cfg.scan_files:,} files")
        fill_rate = fill(d, cfg.scan_small, cfg.scan_files)
        big = []
        for _ in range(rounds):
            n, rate = scan(t, d)
            big.append(rate)
        db_big = meta_db_bytes(t) if t.kind == "dynamicfs" else None
        out[t.name] = {
            "small_files": cfg.scan_small, "big_files": cfg.scan_files, "found": n,
            "create_rate_small": create_rate, "create_rate_big": fill_rate,
            "small_rates": small, "big_rates": big,
            "small_median": statistics.median(small), "big_median": statistics.median(big),
            "big_vs_small": statistics.median(big) / statistics.median(small),
            "meta_db_bytes": db_big,
            "meta_db_bytes_per_file": db_big / cfg.scan_files if db_big else None,
            "meta_db_bytes_per_file_small": db_small / cfg.scan_small if db_small else None,
        }
        t.sample()
        shutil.rmtree(d)  # not timed; frees the space for the next target
    return out


# -- reporting -------------------------------------------------------------------------------

# (workload, metric, targets it applies to, kind, bound, text)
# kind "pt": ratio to passthrough >= bound; "abs": value >= bound.
TARGETS = [
    ("seqwrite", "MiB/s", ["rep:1"], "pt", 0.8, "sequential write, rep:1 ≥ 0.8 × passthrough"),
    ("seqwrite", "MiB/s", ["rep:2", "ec:4+2"], "pt", 0.6,
     "sequential write, rep:2 and ec:4+2 ≥ 0.6 × passthrough"),
    ("seqread", "MiB/s", None, "pt", 0.8, "sequential read, cold ≥ 0.8 × passthrough"),
    ("randread-cold", "IOPS", None, "pt", 0.7, "random 4 KiB read, cold ≥ 0.7 × passthrough"),
    ("randread-warm", "IOPS", None, "pt", 0.9, "random 4 KiB read, warm ≥ 0.9 × passthrough"),
    ("randwrite", "IOPS", None, "pt", 0.5, "random 4 KiB write ≥ 0.5 × passthrough"),
    ("metadata", "create/s", None, "pt", 1.0, "create ≥ 1.0 × passthrough"),
    ("metadata", "stat cold/s", None, "pt", 1.0, "stat (cold) ≥ 1.0 × passthrough"),
    ("metadata", "unlink/s", None, "pt", 1.0, "unlink ≥ 1.0 × passthrough"),
    ("metadata", "list entries/s", None, "abs", 100_000, "list ≥ 100,000 entries/s"),
    ("smallfiles", "write files/s", None, "pt", 0.8, "16 KiB files, write ≥ 0.8 × passthrough"),
    ("smallfiles", "read cold files/s", None, "pt", 0.8,
     "16 KiB files, read ≥ 0.8 × passthrough"),
    ("concurrency", "4 vs 1", None, "abs", 1.5, "4 writers ≥ 1.5 × one writer"),
]
DFS = ["rep:1", "rep:2", "ec:4+2"]


def median(vals: list[float]) -> float | None:
    return statistics.median(vals) if vals else None


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_measured(row: dict) -> str:
    """A target row's figure; with a third decimal where rounding to two would show a missed
    lower bound as reached (0.598 against 0.6 is not "0.60")."""
    text = fmt(row["measured"])
    bound = row.get("bound")
    if bound is not None and not row["met"] and float(text.replace(",", "")) >= bound:
        text = f"{row['measured']:.3f}"
    return text


def summarize(results: dict) -> dict:
    """results[wl][metric][target] = [values] → medians and ratios."""
    out: dict = {}
    for wl, metrics in results.items():
        out[wl] = {}
        for metric, per_target in metrics.items():
            med = {t: median(v) for t, v in per_target.items()}
            raw, pt = med.get("raw"), med.get("passthrough")
            out[wl][metric] = {
                t: {"values": per_target[t], "median": m,
                    "vs_raw": m / raw if m is not None and raw else None,
                    "vs_passthrough": m / pt if m is not None and pt else None}
                for t, m in med.items()}
    return out


def check_targets(summary: dict, scan_res: dict | None, daemons: dict) -> list[dict]:
    rows = []
    for wl, metric, applies, kind, bound, text in TARGETS:
        if wl not in summary or metric not in summary[wl]:
            continue
        for tname in applies or DFS:
            cell = summary[wl][metric].get(tname)
            if cell is None or cell["median"] is None:
                continue
            got = cell["vs_passthrough"] if kind == "pt" else cell["median"]
            if got is None:
                continue
            rows.append({"target": text, "on": tname, "measured": got,
                         "unit": "× passthrough" if kind == "pt" else metric,
                         "met": got >= bound, "bound": bound})
    if scan_res:
        for tname in DFS:
            s = scan_res.get(tname)
            if not s:
                continue
            rows.append({"target": f"{s['big_files']:,}-file pool stat rate within 20% of "
                                   f"{s['small_files']:,}-file pool", "on": tname,
                         "measured": s["big_vs_small"], "unit": "× small pool",
                         "met": s["big_vs_small"] >= 0.8})
            if s["meta_db_bytes_per_file"] is not None:
                rows.append({"target": "metadata DB ≤ 1 KiB per file", "on": tname,
                             "measured": s["meta_db_bytes_per_file"], "unit": "bytes/file",
                             "met": s["meta_db_bytes_per_file"] <= 1024})
    for tname in DFS:
        d = daemons.get(tname)
        if d:
            rows.append({"target": f"daemon peak RSS ≤ 150 MiB + cache ({DEFAULT_CACHE_MIB} MiB)",
                         "on": tname, "measured": d["peak_rss_mib"], "unit": "MiB",
                         "met": d["peak_rss_mib"] <= 150 + DEFAULT_CACHE_MIB})
    return rows


def print_tables(summary: dict, targets: list[Target], cpu: dict) -> None:
    for wl in summary:
        w = next((w for w in WORKLOADS if w.name == wl), None)
        table = Table(title=f"{wl}: {w.title if w else ''}")
        table.add_column("target")
        table.add_column("metric")
        table.add_column("median", justify="right")
        table.add_column("× raw", justify="right")
        table.add_column("× passthrough", justify="right")
        table.add_column("daemon CPU s", justify="right")
        for metric, per in summary[wl].items():
            for t in targets:
                c = per.get(t.name)
                if c is None:
                    continue
                table.add_row(t.name, metric, fmt(c["median"]), fmt(c["vs_raw"]),
                              fmt(c["vs_passthrough"]),
                              fmt(median(cpu.get(wl, {}).get(t.name, []))))
        console.print(table)


def machine_info() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    # A run of the metadata workloads alone does not install fio (ensure_fio).
    fio_v = (subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
             if shutil.which("fio") else "fio not installed")
    df = subprocess.run(["df", "-hT", str(BASE)], capture_output=True, text=True).stdout
    return {"uname": " ".join(platform.uname()), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_mib": mem, "python": sys.version.split()[0], "fio": fio_v,
            "bench_fs": df.strip().splitlines()[-1] if df else "",
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def write_markdown(data: dict, path: Path) -> None:
    m, cfg = data["machine"], data["config"]
    L = ["# Performance", "",
         "The latest report of the benchmark suite (`bash scripts/bench.sh`, which runs "
         "`bench/run.py`; see `bench/README.md`). "
         "Figures are medians of interleaved rounds; ratios compare targets measured in the "
         "same run. The disks under /var/tmp are host-cached: read ratios, not absolute "
         "figures.", ""]
    if cfg["quick"]:
        L += ["**This was a quick run** (`--quick`: "
              f"{cfg['runtime']} s random I/O, {cfg['seq_size'] // MiB} MiB sequential, "
              f"{cfg['scan_files']:,}-file scan pool, {cfg['rounds']} round(s)). "
              "Run the full suite for figures to quote.", ""]
    if cfg.get("note"):
        L += [f"**Note on this run:** {cfg['note']}", ""]
    L += [f"Run: {data['started']} – {data['finished']} (UTC)", "",
          "## Machine", "",
          f"- `{m['uname']}`", f"- CPU: {m['cpu']} ({m['cpus']} CPUs)",
          f"- memory: {m['mem_mib']:,} MiB", f"- Python {m['python']}, {m['fio']}",
          f"- benchmark filesystem: `{m['bench_fs']}`",
          f"- load average at the start / end of the run (1, 5, 15 min): "
          f"{data['loadavg_start']} / {m['loadavg']}; the machine has {m['cpus']} CPUs and "
          "was shared with other work, so absolute figures are noisy", "",
          "## Targets", "",
          "- **raw**: a plain directory on the filesystem that holds the disks.",
          "- **passthrough**: `bench/passthrough.py`, a minimal pyfuse3 passthrough of a plain "
          "directory with DynamicFS's kernel cache settings (60 s entry/attr timeouts, "
          "writeback cache, keep_cache), forwarding fsync and extended attributes (see "
          "bench/README.md for why).",
          "- **rep:1**, **rep:2**: DynamicFS pools of 4 directory disks; **ec:4+2**: a pool of "
          "6 directory disks (ec:4+2 cannot mount on 4). Each has the block size `init` picks "
          "for its policy: 1 MiB for replication, 4 MiB for ec:4+2.", "",
          "Cold workloads remount the FUSE targets (emptying the daemon's own cache) and drop "
          "the kernel caches (`echo 3 > /proc/sys/vm/drop_caches`) first.", ""]
    tgt = data.get("targets_check") or []
    if tgt:
        L += ["## Issue 5 targets against this run", "",
              "| target | on | measured | met |", "| --- | --- | --- | --- |"]
        for r in tgt:
            L.append(f"| {r['target']} | {r['on']} | {fmt_measured(r)} {r['unit']} | "
                     f"{'yes' if r['met'] else '**no**'} |")
        L.append("")
    L += ["## Results", ""]
    for wl, per_metric in data["summary"].items():
        w = next((w for w in WORKLOADS if w.name == wl), None)
        L += [f"### {wl}: {w.title if w else ''}", "",
              "| target | metric | median | × raw | × passthrough | daemon CPU s |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
        for metric, per in per_metric.items():
            for tname, c in per.items():
                cpu = median(data["cpu"].get(wl, {}).get(tname, []))
                L.append(f"| {tname} | {metric} | {fmt(c['median'])} | {fmt(c['vs_raw'])} | "
                         f"{fmt(c['vs_passthrough'])} | {fmt(cpu)} |")
        L.append("")
    if data.get("scan"):
        L += ["### scan: stat every file of a pool (`find -printf`, cold caches)", "",
              "| target | small pool files/s | big pool files/s | big / small | "
              "meta.db bytes/file | fill creates/s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for tname, s in data["scan"].items():
            L.append(f"| {tname} ({s['small_files']:,} → {s['big_files']:,}) | "
                     f"{fmt(s['small_median'])} | {fmt(s['big_median'])} | "
                     f"{fmt(s['big_vs_small'])} | {fmt(s['meta_db_bytes_per_file'])} | "
                     f"{fmt(s['create_rate_big'])} |")
        L.append("")
    if data.get("daemons"):
        L += ["### daemons over the whole run", "",
              "| target | peak RSS (VmHWM, MiB) | CPU seconds |", "| --- | ---: | ---: |"]
        for tname, d in data["daemons"].items():
            L.append(f"| {tname} | {fmt(d['peak_rss_mib'])} | {fmt(d['cpu_s'])} |")
        L.append("")
    if data.get("peaks"):
        names = list(data["daemons"])
        L += ["### daemon peak RSS per workload (MiB, highest of the rounds)", "",
              "| workload | " + " | ".join(names) + " |",
              "| --- |" + " ---: |" * len(names)]
        for wname, per in data["peaks"].items():
            L.append(f"| {wname} | " + " | ".join(
                fmt(max(per[n])) if n in per else "" for n in names) + " |")
        L.append("")
    L += ["## Targets from issue 5", "",
          "| workload | target |", "| --- | --- |",
          "| sequential write 1 GiB, rep:2 and ec:4+2 | ≥ 0.6 × passthrough (rep:1 ≥ 0.8 ×) |",
          "| sequential read 1 GiB, cold | ≥ 0.8 × passthrough |",
          "| random 4 KiB read, cold / warm | ≥ 0.7 × / ≥ 0.9 × passthrough |",
          "| random 4 KiB write (fsync at end) | ≥ 0.5 × passthrough |",
          "| create / stat / unlink | ≥ 1.0 × passthrough |",
          "| list a 5,000-entry directory | ≥ 100,000 entries/s |",
          "| 16 KiB small files, write and read | ≥ 0.8 × passthrough |",
          "| 1,000,000-file pool | stat rate within 20% of a 10,000-file pool; "
          "metadata DB ≤ 1 KiB per file |",
          "| daemon memory | ≤ 150 MiB + the configured cache size during the whole suite |",
          "| concurrency | 4 parallel writers get ≥ 1.5 × the throughput of one |", ""]
    if ANALYSIS.exists():
        # What bounds the unmet targets: written by hand from profiles, kept with the suite.
        L += [ANALYSIS.read_text().rstrip(), ""]
    path.write_text("\n".join(L))


# -- main ------------------------------------------------------------------------------------


def ensure_fio() -> None:
    if shutil.which("fio"):
        return
    console.print("installing fio (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # bootstrap.sh refreshes the package lists only when it installs something itself: on a
    # machine that already had FUSE they may be missing or stale.
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "fio"], check=True, env=env)


def ensure_pyspy() -> str:
    exe = VENV_BIN / "py-spy"
    if not exe.exists():
        subprocess.run([str(VENV_BIN / "pip"), "install", "py-spy"], check=True)
    return str(exe)


class Profiler:
    """py-spy attached to a target's daemon, following it across remounts.

    Each daemon is recorded twice at once: a flame graph (SVG) and py-spy's raw collapsed
    stacks, which `pyspy_summary` turns into a markdown table per kind of thread, so that a
    report can show the profile behind a figure. Cold workloads (seqread, randread-cold,
    smallfiles) unmount and mount again, which starts a new daemon: each daemon gets its own
    flame graph and table, numbered in mount order, so the part measured after the remount
    (the cold reads) is profiled too.
    """

    RATE = 250

    def __init__(self, pyspy: str, stem: str, title: str) -> None:
        self.pyspy = pyspy
        self.stem = stem
        self.title = title
        self.active = False
        self.parts: list[tuple[Path, Path]] = []  # (flame graph, raw stacks) per daemon
        self.seconds: list[float] = []
        self._procs: list[subprocess.Popen] = []
        self._t0 = 0.0

    def attach(self, pid: int) -> None:
        if not self.active:
            return
        self.detach()
        n = len(self.parts) + 1
        svg, raw = RESULTS / f"{self.stem}-{n}.svg", RESULTS / f"{self.stem}-{n}.txt"
        self._procs = [subprocess.Popen(
            [self.pyspy, "record", "--pid", str(pid), "--output", str(out), "--format", fmt,
             "--threads", "--rate", str(self.RATE), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for out, fmt in ((svg, "flamegraph"), (raw, "raw"))]
        self.parts.append((svg, raw))
        time.sleep(1)  # py-spy needs a moment to attach; earlier samples would be lost
        self._t0 = time.perf_counter()

    def detach(self) -> None:
        """Stop recording; py-spy writes its output on SIGINT."""
        procs, self._procs = self._procs, []
        if not procs:
            return
        self.seconds.append(time.perf_counter() - self._t0)
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def finish(self) -> list[Path]:
        """The flame graphs and the tables written (one daemon: without the number)."""
        self.active = False
        self.detach()
        kept: list[tuple[Path, Path, float]] = []  # (flame graph, raw stacks, seconds)
        for (svg, raw), seconds in zip(self.parts, self.seconds, strict=True):
            # A daemon that did nothing while attached (seqread's first one) gets an SVG
            # that only says so.
            if not svg.exists() or "No valid input" in svg.read_text(errors="replace")[:2000]:
                svg.unlink(missing_ok=True)
                raw.unlink(missing_ok=True)
            else:
                kept.append((svg, raw, seconds))
        if len(kept) == 1:
            svg, raw, seconds = kept[0]
            kept = [(svg.rename(RESULTS / f"{self.stem}.svg"),
                     raw.rename(RESULTS / f"{self.stem}.txt"), seconds)]
        md = RESULTS / f"{self.stem}.md"
        md.write_text("\n".join(
            pyspy_summary.summarize_file(
                raw, rate=self.RATE, seconds=seconds,
                title=self.title + (f", daemon {i} of {len(kept)}" if len(kept) > 1 else ""))
            for i, (_, raw, seconds) in enumerate(kept, 1)))
        return [svg for svg, _, _ in kept] + [md]


# The pools --profile can run on: the DynamicFS targets, as the suite sets them up.
PROFILE_TARGETS = [t.name for t in make_targets(None) if t.kind == "dynamicfs"]


def profile(cfg: Config, wl: Workload, target: str, stamp: str) -> None:
    t = make_targets([target])[0]
    t.prefix = "profile-"
    pyspy = ensure_pyspy()
    t.profiler = Profiler(pyspy, f"profile-{wl.name}-{t.slug}-{stamp}",
                          f"{wl.name} on {t.name}")
    try:
        t.setup()
        # A fresh pool sweeps its disks for orphans GC_DELAY after its first mount; let it
        # sweep the empty pool rather than the profiled pass's files.
        time.sleep(GC_DELAY + 1)
        # Unprofiled first pass: lays out the files the workload reads.
        wl.fn(cfg, t)
        t.profiler.active = True
        t.profiler.attach(t.pid())
        res = wl.fn(cfg, t)
        t.profiler.title += " (" + ", ".join(f"{k} {fmt(v)}" for k, v in res.items()) + ")"
        *svgs, table = t.profiler.finish()
        console.print(res)
        for svg in svgs:
            console.print(f"flame graph: {svg}")
        console.print(f"tables: {table}")
        if len(svgs) > 1:
            console.print("[yellow]this workload remounts (cold caches): one flame graph and "
                          "table per daemon, in mount order; the last one is the cold part[/]")
    finally:
        t.profiler.active = False
        t.unmount()  # stops py-spy first


def main() -> int:
    ap = argparse.ArgumentParser(description="DynamicFS benchmark suite")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="10 s random I/O, 256 MiB sequential files, 20,000-file scan pool")
    ap.add_argument("--only", action="append", metavar="WORKLOAD",
                    help=f"run only this workload (repeatable): "
                         f"{', '.join(w.name for w in WORKLOADS)}, {SCAN}")
    ap.add_argument("--targets", action="append", metavar="TARGET",
                    choices=[t.name for t in make_targets(None)],
                    help="run only on this target (repeatable): raw, passthrough, rep:1, "
                         "rep:2, ec:4+2")
    ap.add_argument("--scan-files", type=int, help="files in the big scan pool "
                    "(default 1,000,000; 20,000 with --quick)")
    ap.add_argument("--profile", metavar="WORKLOAD",
                    help="run WORKLOAD once under py-spy; flame graphs in bench/results/")
    ap.add_argument("--profile-target", metavar="TARGET", default="rep:2",
                    choices=PROFILE_TARGETS,
                    help="the pool --profile runs on: rep:1, rep:2 (default) or ec:4+2")
    ap.add_argument("--no-report", action="store_true", help="do not write docs/performance.md")
    ap.add_argument("--scan-from", metavar="RESULTS_JSON", type=Path,
                    help="report the scan of an earlier run (its bench/results JSON) instead "
                    "of running one (filling 1,000,000 files per target takes over an hour)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: at least one round is needed")

    if os.geteuid() != 0:
        console.print("[red]run as root: the suite drops the kernel caches and mounts FUSE[/]")
        return 2
    cfg = Config(quick=args.quick, runtime=10 if args.quick else 20,
                 seq_size=(256 * MiB) if args.quick else GiB,
                 scan_files=args.scan_files or (20_000 if args.quick else 1_000_000))
    names = [w.name for w in WORKLOADS] + [SCAN]
    for n in (args.only or []) + ([args.profile] if args.profile else []):
        if n not in names:
            ap.error(f"unknown workload {n!r}; one of {', '.join(names)}")
    chosen = [args.profile] if args.profile else args.only
    if any(w.uses_fio for w in WORKLOADS if not chosen or w.name in chosen):
        ensure_fio()
    BASE.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")

    # Ctrl-C and SIGTERM both unwind through the finally below, which unmounts everything.
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background

    if args.profile:
        if args.profile == SCAN:
            ap.error("the scan cannot be profiled; pick another workload")
        profile(cfg, next(w for w in WORKLOADS if w.name == args.profile),
                args.profile_target, stamp)
        return 0

    unmount_leftovers()
    workloads = [w for w in WORKLOADS if not args.only or w.name in args.only]
    do_scan = (not args.only or SCAN in args.only) and not args.scan_from
    scan_note = scan_from = None
    if args.scan_from:
        try:
            earlier = json.loads(args.scan_from.read_text())
            scan_from = earlier["scan"]
        except (OSError, ValueError, KeyError) as exc:
            ap.error(f"--scan-from {args.scan_from}: not a results file with a scan ({exc})")
        if not scan_from:
            ap.error(f"--scan-from {args.scan_from}: that run has no scan")
        scan_note = (f"the scan table comes from an earlier run ({args.scan_from.name}, "
                     f"started {earlier['started']} UTC, "
                     f"{earlier['config']['scan_files']:,} files), not from this one")
    targets = make_targets(args.targets)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    results: dict = {}
    cpu: dict = {}
    peaks: dict = {}  # workload -> target -> the daemon's peak RSS (MiB) per round
    scan_res = scan_from  # None unless --scan-from (then no scan runs)
    try:
        for t in targets:
            console.print(f"setting up {t.name} under {t.root}")
            t.setup()
        for r in range(args.rounds):
            k = r % len(targets)
            order = targets[k:] + targets[:k]
            for w in workloads:
                for t in order:
                    console.print(f"round {r + 1}/{args.rounds} {w.name:14} {t.name}", end="")
                    c0 = t.cpu()
                    t.start_window()
                    t0 = time.perf_counter()
                    vals = w.fn(cfg, t)
                    t.sample()
                    used = t.cpu() - c0
                    if t.kind != "raw":
                        peaks.setdefault(w.name, {}).setdefault(t.name, []).append(
                            t.window_peak_kib / 1024)
                    console.print(f"  ({time.perf_counter() - t0:.1f} s) " + ", ".join(
                        f"{k} {fmt(v)}" for k, v in vals.items()))
                    for metric, v in vals.items():
                        results.setdefault(w.name, {}).setdefault(metric, {}).setdefault(
                            t.name, []).append(v)
                    if t.kind != "raw":
                        cpu.setdefault(w.name, {}).setdefault(t.name, []).append(used)
        if do_scan:
            try:
                scan_res = run_scan(cfg, targets, args.rounds)
            except KeyboardInterrupt:
                # The rounds took an hour: an interrupted scan must not throw them away.
                console.print("[red]scan interrupted: reporting the rounds without it[/]")
                do_scan = False
    except KeyboardInterrupt:
        console.print("[red]interrupted: unmounting[/]")
        raise
    finally:
        for t in targets:
            t.unmount()
        unmount_leftovers()

    daemons = {t.name: {"peak_rss_mib": t.peak_rss_kib / 1024, "cpu_s": t.cpu_done}
               for t in targets if t.kind != "raw"}
    summary = summarize(results)
    print_tables(summary, targets, cpu)
    data = {
        "started": started, "loadavg_start": loadavg_start,
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "config": {"quick": cfg.quick, "rounds": args.rounds, "runtime": cfg.runtime,
                   "seq_size": cfg.seq_size, "scan_files": cfg.scan_files,
                   "scan_small": cfg.scan_small, "targets": [t.name for t in targets],
                   "workloads": [w.name for w in workloads] + ([SCAN] if do_scan else []),
                   **({"note": scan_note} if scan_note else {})},
        "results": results, "summary": summary, "cpu": cpu, "scan": scan_res,
        "daemons": daemons, "peaks": peaks,
    }
    data["targets_check"] = check_targets(summary, scan_res, daemons)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(data, indent=1))
    t = Table(title="issue 5 targets")
    for col in ("target", "on", "measured", "met"):
        t.add_column(col)
    for row in data["targets_check"]:
        t.add_row(row["target"], row["on"], f"{fmt_measured(row)} {row['unit']}",
                  "yes" if row["met"] else "[red]no[/]")
    console.print(t)
    if data["daemons"]:
        console.print(data["daemons"])
    console.print(f"results: {out}")
    if not args.no_report:
        write_markdown(data, REPORT)
        console.print(f"report: {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
