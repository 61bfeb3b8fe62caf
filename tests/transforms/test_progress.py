"""Progress plumbing: worker count files summed by the launcher's monitor."""

import io
import logging
import os

from cropshard.transforms.progress import ProgressMonitor, ProgressWriter, eta_is_meaningful, format_progress, read_done


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


def test_eta_only_once_it_means_something():
    assert format_progress(1, 72, elapsed=2.0).endswith("ETA -")  # one image after start-up says nothing yet
    assert not eta_is_meaningful(0, 100, 60.0)
    assert eta_is_meaningful(1, 100, 10.0) and eta_is_meaningful(5, 100, 1.0) and not eta_is_meaningful(4, 100, 9.9)
    assert eta_is_meaningful(72, 72, 0.5) and format_progress(72, 72, 0.5).endswith("ETA 0m00s")


def test_log_lines_only_when_the_count_moves(tmp_path, caplog):
    writer = ProgressWriter(str(tmp_path), interval=0)
    monitor = ProgressMonitor(str(tmp_path), total=2, mode="log", stream=io.StringIO(), interval=0.01)
    with caplog.at_level(logging.INFO, logger="cropshard"):
        monitor.start()
        writer.add()
        writer.flush()
        monitor.stop()
        monitor.stop()  # a second final render of the same count adds no line
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]
    assert len(lines) == len(set(lines)) and lines[-1].startswith("progress [") and " 1/2 " in lines[-1]
