"""Peak memory of CrossLayerPooler.transform for 200 and for 2,000 images.

Each size runs in a fresh process that fits the default pooler on 16 images and
then transforms all of them, in memory with ``transform`` or, with ``--npy``,
streamed into a memory-mapped ``.npy`` file with ``transform_to_npy``. The
process measures only the transform (Linux only):

- peak total RSS: ``VmHWM`` of ``/proc/self/status``, reset just before the
  transform by writing 5 to ``/proc/self/clear_refs``.
- peak anonymous and file-backed RSS: the largest ``RssAnon`` and ``RssFile``
  that a background thread reads from ``/proc/self/status`` every
  ``--interval`` ms, so a peak shorter than one interval can be missed. The
  sampled peak of ``RssAnon + RssFile + RssShmem`` is printed next to
  ``VmHWM`` to show how much the sampling misses. The peak anonymous RSS is
  also given for the first and the last tenth of the run's duration.
- decoding workers: the largest sum of their unique set sizes (USS, the
  ``Private_Clean`` and ``Private_Dirty`` lines of ``/proc/PID/smaps_rollup``),
  read every tenth sample. USS leaves out the pages that a worker still shares
  with the main process since the fork, which the main process already counts.

If memory is bounded by the batch and the output array, the peak anonymous RSS
of the main process grows between the two sizes by the growth of the output
array (1,800 rows x n_features x 4 bytes) in memory, and barely grows when the
rows stream to a ``.npy`` file. Written pages of the mapped file show up in
``RssFile`` instead: the kernel can write them back and reclaim them, which it
cannot do with anonymous memory when there is no swap.

Run: python benchmarks/memory_peak.py [--sizes 200 2000] [--npy] [--repeats 1]
     [--interval 20] [--json F]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

MIB = 2**20
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
WORKER_SAMPLE_EVERY = 10


def read_status(pid: int | str = "self") -> dict[str, int]:
    """Return the memory fields of ``/proc/PID/status`` in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in STATUS_FIELDS:
                values[name] = int(value.split()[0]) * 1024
    return values


def read_uss(pid: int) -> int:
    """Return the unique set size of process ``pid`` in bytes, 0 if it has exited."""
    uss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    uss += int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return uss


def child_pids() -> list[int]:
    """Return the ids of the child processes of every thread of this process."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.extend(int(pid) for pid in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            # The thread exited after the directory listing.
            continue
    return pids


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS, or return False if the kernel rejects it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class MemorySampler(threading.Thread):
    """Thread that records peak RSS components every ``interval`` seconds."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.stopped = threading.Event()
        self.peaks = dict.fromkeys(
            ("RssAnon", "RssFile", "RssShmem", "total", "workers_uss"), 0
        )
        self.n_samples = 0
        self.max_gap = 0.0
        self.start_time = time.perf_counter()
        # (seconds since start, RssAnon) of every sample
        self.anon_series: list[tuple[float, int]] = []

    def sample(self) -> None:
        status = read_status()
        now = time.perf_counter() - self.start_time
        self.anon_series.append((now, status["RssAnon"]))
        total = status["RssAnon"] + status["RssFile"] + status["RssShmem"]
        for name, value in [*status.items(), ("total", total)]:
            if name in self.peaks:
                self.peaks[name] = max(self.peaks[name], value)
        if self.n_samples % WORKER_SAMPLE_EVERY == 0:
            workers = sum(read_uss(pid) for pid in child_pids())
            self.peaks["workers_uss"] = max(self.peaks["workers_uss"], workers)
        self.n_samples += 1

    def run(self) -> None:
        previous = time.perf_counter()
        while not self.stopped.is_set():
            self.sample()
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - previous)
            previous = now
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sample()

    def peak_anon_between(self, start: float, end: float) -> int:
        """Return the peak RssAnon between two fractions of the sampled time."""
        duration = self.anon_series[-1][0]
        return max(
            (anon for t, anon in self.anon_series if start <= t / duration <= end),
            default=0,
        )


def measure(n_images: int, folder: Path, npy: bool, interval: float) -> dict:
    """Fit the pooler, then transform ``n_images`` files while sampling memory."""
    from skcrosslayer import CrossLayerPooler

    paths = sorted(folder.glob("*.jpg"))[:n_images]
    pooler = CrossLayerPooler(n_workers=2, random_state=0).fit(paths[:16])
    gc.collect()
    before = read_status()
    peak_reset = reset_peak_rss()

    sampler = MemorySampler(interval)
    sampler.start()
    start = time.perf_counter()
    if npy:
        output_path = folder / f"features-{n_images}.npy"
        features = pooler.transform_to_npy(paths, output_path)
    else:
        features = pooler.transform(paths)
    seconds = time.perf_counter() - start
    sampler.stop()
    after = read_status()

    row = {
        "n_images": n_images,
        "output_bytes": features.nbytes,
        "seconds": seconds,
        "anon_before": before["RssAnon"],
        "file_before": before["RssFile"],
        "peak_anon": sampler.peaks["RssAnon"],
        "peak_anon_first_tenth": sampler.peak_anon_between(0.0, 0.1),
        "peak_anon_last_tenth": sampler.peak_anon_between(0.9, 1.0),
        "peak_file": sampler.peaks["RssFile"],
        "peak_total_sampled": sampler.peaks["total"],
        "peak_rss": after["VmHWM"],
        "peak_rss_reset": peak_reset,
        "final_anon": after["RssAnon"],
        "final_file": after["RssFile"],
        "workers_peak_uss": sampler.peaks["workers_uss"],
        "n_samples": sampler.n_samples,
        "max_sample_gap": sampler.max_gap,
    }
    if npy:
        del features
        output_path.unlink()
    return row


def run_child(n_images: int, folder: str, args) -> dict:
    """Run :func:`measure` in a fresh interpreter and return its row."""
    command = [sys.executable, __file__, "--child", str(n_images), "--folder", folder]
    command += ["--interval", str(args.interval)]
    if args.npy:
        command.append("--npy")
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode:
        sys.exit(f"child for {n_images} images failed:\n{output.stderr}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def median_row(runs: list[dict]) -> dict:
    """Return the median of every numeric field over the repeats of one size."""
    row = dict(runs[0])
    for name, value in row.items():
        fixed = name in ("n_images", "output_bytes") or isinstance(value, bool)
        if not fixed:
            row[name] = statistics.median(run[name] for run in runs)
    row["peak_rss_reset"] = all(run["peak_rss_reset"] for run in runs)
    return row


def print_row(row: dict, repeats: int) -> None:
    """Print one row in MiB, the medians over the repeats."""
    hwm_note = "" if row["peak_rss_reset"] else ", not reset so it includes the fit"
    print(
        f"{row['n_images']} images (median of {repeats}), MiB:\n"
        f"  anonymous: before {row['anon_before'] / MIB:.0f}, "
        f"peak {row['peak_anon'] / MIB:.0f} "
        f"(first tenth of the run {row['peak_anon_first_tenth'] / MIB:.0f}, "
        f"last tenth {row['peak_anon_last_tenth'] / MIB:.0f})\n"
        f"  file-backed: before {row['file_before'] / MIB:.0f}, "
        f"peak {row['peak_file'] / MIB:.0f}, final {row['final_file'] / MIB:.0f}\n"
        f"  total: peak {row['peak_rss'] / MIB:.0f} (VmHWM{hwm_note}), "
        f"sampled peak {row['peak_total_sampled'] / MIB:.0f}\n"
        f"  decoding workers' USS: peak {row['workers_peak_uss'] / MIB:.0f}\n"
        f"  output array: {row['output_bytes'] / MIB:.0f}, "
        f"transform took {row['seconds']:.0f} s",
        flush=True,
    )


def print_growth(rows: list[dict], npy: bool) -> None:
    first, last = rows[0], rows[-1]
    output_growth = (last["output_bytes"] - first["output_bytes"]) / MIB
    where = "streamed to .npy" if npy else "in memory"
    print(f"from {first['n_images']} to {last['n_images']} images ({where}):")
    for name, label in [
        ("peak_anon", "peak anonymous RSS"),
        ("peak_file", "peak file-backed RSS"),
        ("peak_rss", "peak total RSS (VmHWM)"),
    ]:
        growth = round((last[name] - first[name]) / MIB)
        print(f"  {label} grows by {growth} MiB")
    print(f"  output array grows by {output_growth:.0f} MiB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--npy", action="store_true", help="stream to a .npy file")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="fresh processes per size; the medians over them are printed",
    )
    parser.add_argument(
        "--interval", type=float, default=20, help="sampling interval in ms"
    )
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        row = measure(args.child, Path(args.folder), args.npy, args.interval / 1000)
        print(json.dumps(row))
        return 0

    from _photos import write_photo_files

    rows, runs = [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        write_photo_files(Path(folder), max(args.sizes))
        for n_images in sorted(args.sizes):
            size_runs = [run_child(n_images, folder, args) for _ in range(args.repeats)]
            runs.extend(size_runs)
            rows.append(median_row(size_runs))
            print_row(rows[-1], args.repeats)
    print_growth(rows, args.npy)
    load_after = os.getloadavg()
    print(
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )

    if args.json:
        results = {
            "npy": args.npy,
            "repeats": args.repeats,
            "interval_ms": args.interval,
            "python": platform.python_version(),
            "load_average": [load_before, load_after],
            "rows": rows,
            "runs": runs,
        }
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
