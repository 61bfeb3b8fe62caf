"""Live progress for local builds: workers write their counts to small files, the launcher sums them.

DirectRunner's multi-process workers are separate processes and Beam's metrics are only
available after the pipeline finishes, so each DoFn instance periodically replaces one file
`<dir>/<pid>-<instance>.count`; `ProgressMonitor` (a launcher thread) adds them up and shows
images done / total, images/s and ETA: a bar on a terminal, plain log lines otherwise.
Remote runners (Dataflow, Flink) have their own UIs and get no progress directory.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from typing import TextIO

_LOGGER = logging.getLogger("cropshard")


class ProgressWriter:
    """Worker side: count processed inputs, flush at most every `interval` seconds."""

    def __init__(self, directory: str, interval: float = 0.5) -> None:
        self._path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex[:8]}.count")
        self._interval = interval
        self._count = 0
        self._last = 0.0

    def add(self, n: int = 1) -> None:
        self._count += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self.flush()
            self._last = now

    def flush(self) -> None:
        tmp = f"{self._path}.tmp"
        try:
            with open(tmp, "w") as handle:
                handle.write(str(self._count))
            os.replace(tmp, self._path)  # atomic: the monitor never reads half a number
        except OSError:
            pass  # progress is best effort; it must never fail a build


def read_done(directory: str) -> int:
    done = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.endswith(".count"):
            try:
                with open(os.path.join(directory, name)) as handle:
                    done += int(handle.read() or 0)
            except (OSError, ValueError):
                continue
    return done


ETA_AFTER_SECONDS = 10.0
ETA_AFTER_FRACTION = 0.05


def eta_is_meaningful(done: int, total: int, elapsed: float) -> bool:
    """An ETA from the first images says more about worker start-up than about the build: show
    one when all is done, or once something is done and ETA_AFTER_SECONDS have passed or
    ETA_AFTER_FRACTION of the total is done."""
    if done >= total:
        return True
    return done > 0 and (elapsed >= ETA_AFTER_SECONDS or done >= ETA_AFTER_FRACTION * total)


def format_progress(done: int, total: int, elapsed: float, width: int = 30) -> str:
    """'[#####.....]  120/1000  12.0 img/s  ETA 1m13s' (pure); 'ETA -' until eta_is_meaningful."""
    rate = done / elapsed if elapsed > 0 else 0.0
    fraction = min(1.0, done / total) if total else 0.0
    filled = int(round(width * fraction))
    if eta_is_meaningful(done, total, elapsed):
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        minutes, seconds = divmod(int(eta), 60)
        eta_text = f"{minutes}m{seconds:02d}s"
    else:
        eta_text = "-"
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total}  {rate:7.1f} img/s  ETA {eta_text}"


class ProgressMonitor:
    """Launcher side: a daemon thread rendering progress until `stop()`."""

    def __init__(self, directory: str, total: int, mode: str = "auto", stream: TextIO | None = None, interval: float | None = None) -> None:
        self._directory = directory
        self._total = total
        self._stream = stream or sys.stderr
        self._bar = mode == "bar" or (mode == "auto" and self._stream.isatty())
        self._interval = interval if interval is not None else (0.5 if self._bar else 10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cropshard-progress", daemon=True)
        self._start = time.monotonic()
        self._logged: int | None = None  # the count of the last log line

    def start(self) -> ProgressMonitor:
        self._thread.start()
        return self

    def _render(self) -> None:
        done = read_done(self._directory)
        line = format_progress(done, self._total, time.monotonic() - self._start)
        if self._bar:
            self._stream.write(f"\r{line}")
            self._stream.flush()
        elif done != self._logged:  # a log line only when the count moved: no repeated lines while the job finishes
            self._logged = done
            _LOGGER.info("progress %s", line)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._render()

    def stop(self, final_line: bool = True) -> None:
        """Stop rendering; `final_line`: render the last count first (not after an interrupt)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if final_line:
            self._render()
        if self._bar:
            self._stream.write("\n")
