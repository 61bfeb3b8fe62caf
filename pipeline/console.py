"""What a build shows on the terminal: its summary, progress and errors; everything else goes to a log file.

Beam, TensorFlow and the Google client libraries write warnings and start-up notices to stderr,
in the launcher and in every worker process (DirectRunner's multi-process workers are
subprocesses; Flink's LOOPBACK workers are threads). `quiet_output` points file descriptor 2
itself at the build's log file, so those processes, which inherit it, and C++ libraries writing to
it directly, land there too; the terminal's stderr is kept as `Console.stream` for cropshard's own
lines. With --verbose nothing is redirected and library logs appear as they come.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import TextIO

NOISY_LOGGERS = ("apache_beam", "absl", "tensorflow", "google", "urllib3")
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"


LOG_DAYS = 7  # older logs are removed when a new one is made


def new_log_path(command: str) -> str:
    """<temp dir>/cropshard-logs/<command>-<UTC time>-<pid>.log; when that folder is another
    user's (a shared /tmp), a file of this user's own in the temp dir itself."""
    folder = os.path.join(tempfile.gettempdir(), "cropshard-logs")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{command}-{stamp}-{os.getpid()}.log")
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError:
        handle, path = tempfile.mkstemp(prefix=f"cropshard-{command}-{stamp}-", suffix=".log")
        os.close(handle)
        return path
    _remove_old_logs(folder)
    return path


def _remove_old_logs(folder: str) -> None:
    cutoff = datetime.datetime.now().timestamp() - LOG_DAYS * 86400
    for entry in os.scandir(folder):
        try:
            if entry.name.endswith(".log") and entry.stat().st_mtime < cutoff:
                os.remove(entry.path)
        except OSError:
            continue  # another user's, or already gone


@dataclasses.dataclass
class Console:
    stream: TextIO  # the terminal's stderr: progress and cropshard's messages
    log_path: str | None  # where everything else went; None with --verbose
    restore: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack, repr=False)

    def keep_until_exit(self) -> None:
        """Leave the output redirected when the command returns, for a process about to exit after
        Ctrl-C: Beam's runner threads and its worker subprocesses, stopped by the same signal, die
        after the command has returned (the launcher's threads as the interpreter shuts down), and
        their tracebacks go to the log as the rest of Beam's output did, not to the terminal after
        cropshard's last line."""
        self.restore.pop_all()


def _configure_logging(console_stream: TextIO, log_stream: TextIO | None) -> list[logging.Handler]:
    """cropshard's INFO lines to the terminal; with a log, every logger (and Python warnings) to
    the log only; without one, other libraries' warnings to the terminal. Returns the handlers added."""
    root = logging.getLogger()
    to_console = logging.StreamHandler(console_stream)
    to_console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    handlers: list[logging.Handler] = [to_console]
    cropshard = logging.getLogger("cropshard")
    cropshard.setLevel(logging.INFO)
    if log_stream is None:
        root.addHandler(to_console)
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    else:
        cropshard.addHandler(to_console)
        to_log = logging.StreamHandler(log_stream)
        to_log.setFormatter(logging.Formatter("%(asctime)s %(process)d " + CONSOLE_FORMAT))
        root.addHandler(to_log)
        handlers.append(to_log)
    root.setLevel(logging.INFO)
    return handlers


def _writes_to_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's capture object, a wrapper
        return False


@contextlib.contextmanager
def quiet_output(command: str, verbose: bool) -> Iterator[Console]:
    """Set up the process for one command (see the module doc); everything is restored on exit."""
    # TensorFlow's C++ start-up banners: off unless asked for; worker processes inherit this.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    with contextlib.ExitStack() as stack:
        if verbose:
            console = Console(sys.stderr, None)
            log = None
        else:
            log_path = new_log_path(command)
            log = stack.enter_context(open(log_path, "a", buffering=1, encoding="utf-8"))
            sys.stderr.flush()
            saved_fd = os.dup(2)
            stack.callback(os.close, saved_fd)
            # The terminal: a new stream on the saved descriptor when sys.stderr is descriptor 2 itself.
            terminal = stack.enter_context(os.fdopen(os.dup(saved_fd), "w", buffering=1)) if _writes_to_fd2(sys.stderr) else sys.stderr
            os.dup2(log.fileno(), 2)
            stack.callback(os.dup2, saved_fd, 2)
            saved_stderr, sys.stderr = sys.stderr, terminal  # Python-level messages (argparse, compare's lines) stay visible
            stack.callback(setattr, sys, "stderr", saved_stderr)
            logging.captureWarnings(True)
            stack.callback(logging.captureWarnings, False)
            # Beam's threads die noisily when a job stops (a worker killed by Ctrl-C, Flink closing
            # its channels): their tracebacks belong in the log, like the rest of Beam's output.
            saved_hook, threading.excepthook = threading.excepthook, _log_thread_exception
            stack.callback(setattr, threading, "excepthook", saved_hook)
            console = Console(terminal, log_path)
        stack.callback(_remove, _configure_logging(console.stream, log))
        console.restore = stack.pop_all()  # undone on leaving the block, unless keep_until_exit()
        with console.restore:
            yield console


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    thread = args.thread.name if args.thread else "?"
    logging.getLogger("threads").error("exception in thread %s", thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _remove(handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        for name in ("", "cropshard"):
            logging.getLogger(name).removeHandler(handler)
