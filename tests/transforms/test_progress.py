"""Progress plumbing: worker count files summed by the launcher's monitor."""

import io
import os

from cropshard.transforms.progress import ProgressMonitor, ProgressWriter, format_progress, read_done


def test_writers_in_several_processes_sum_up(tmp_path):
    writers = [ProgressWriter(str(tmp_path), interval=0) for _ in range(3)]
    for n, writer in enumerate(writers, start=1):
        for _ in range(n * 10):
            writer.add()
        writer.flush()
    assert read_done(str(tmp_path)) == 10 + 20 + 30
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_format_progress_shows_rate_and_eta():
    line = format_progress(50, 200, elapsed=10.0, width=20)
    assert line.startswith("[#####...............]")
    assert " 50/200" in line and "5.0 img/s" in line and "ETA 0m30s" in line
    assert format_progress(0, 0, 0.0).endswith("ETA 0m00s")


def test_monitor_renders_a_bar_to_a_terminal_stream(tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    writer = ProgressWriter(str(tmp_path), interval=0)
    monitor = ProgressMonitor(str(tmp_path), total=4, mode="auto", stream=stream, interval=0.01).start()
    for _ in range(4):
        writer.add()
    monitor.stop()
    assert "\r[" in stream.getvalue() and "4/4" in stream.getvalue() and stream.getvalue().endswith("\n")
