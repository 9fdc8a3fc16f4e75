"""The peak resident memory of a command a benchmark runs, measured in the command's own processes.

``ru_maxrss`` from ``wait4``/``RUSAGE_CHILDREN`` is not that on Linux: at ``exec`` the kernel keeps the
high-water mark of the forked copy of the *parent* (fs/exec.c, ``setmax_mm_hiwater_rss``), so a child of a
benchmark that holds 2.7 GB reports at least 2.7 GB whatever it used itself. ``VmHWM`` in
``/proc/PID/status`` is the high-water mark of the process's own address space since its exec: this
polls it (every 20 ms) for the child and every process below it (torchrun's workers), keeping each
one's last reading (VmHWM only grows). Elsewhere (no /proc) it falls back to ``ru_maxrss``.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def run_measured(argv: list[str], **popen_kw) -> dict:
    """Run ``argv`` to the end: returncode, stdout and stderr (text), wall seconds, CPU seconds (of every process
    it waited for), and the peak
    resident memory in MB of the largest of its processes (``peak_rss_mb``; ``peak_rss_how`` says how)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kw)
    seen: dict[int, int] = {}
    done = threading.Event()
    use_proc = Path(f"/proc/{proc.pid}/status").exists()

    def poll() -> None:
        while not done.is_set():
            for p in _descendants(proc.pid):
                v = _hwm_kib(p)
                if v is not None:
                    seen[p] = max(seen.get(p, 0), v)
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    if use_proc:
        watcher.start()
    out, err = proc.communicate()
    done.set()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {"returncode": proc.returncode, "stdout": out, "stderr": err, "wall_s": wall,
           "cpu_s": ru.ru_utime + ru.ru_stime - before.ru_utime - before.ru_stime}
    if use_proc and seen:
        res["peak_rss_mb"] = max(seen.values()) / 1024
        res["peak_rss_how"] = "VmHWM of the command's own processes (largest), polled every 20 ms"
    else:
        res["peak_rss_mb"] = ru.ru_maxrss / 1024
        res["peak_rss_how"] = "ru_maxrss of the children (includes the benchmark's own memory at fork)"
    return res
