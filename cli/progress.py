"""How far a long command has got: a bar on a terminal, a plain line now and then otherwise.

On a terminal (stderr is a TTY) a ``rich`` progress bar shows the work done of its total (or a
pulse when the total is unknown), the rate's time left, and a note on what is happening.
Anywhere else (CI logs, pipes, files) the same facts go out as a plain line every
``PLAIN_EVERY_SECONDS`` and once at the end, so a log shows the command alive without being
flooded.  Everything goes to stderr: stdout stays the command's result, which scripts read.

    with progress("ingest changes.jsonl", total=size, unit="bytes") as shown:
        for batch in batches:
            ...
            shown.advance(batch_bytes, note=report.summary())
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

#: Seconds between plain lines off a terminal: often enough that a CI log shows the command
#: alive and moving, rarely enough that an hour-long run writes a few hundred lines, not millions.
PLAIN_EVERY_SECONDS = 10.0


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} bytes"
    return f"{value:,.0f}" + (f" {unit}" if unit else "")


class Progress:
    """One long piece of work being shown: ``advance`` or ``update`` how much is done (of
    ``total``, which may be unknown and may be set later), ``note`` what is happening now (``say``
    when it is news), ``log`` a line that must stay in the output, ``result`` a line of the
    command's own output.  Safe to call from several threads."""

    def __init__(self, description: str, total: float | None, unit: str, stream: TextIO,
                 console: Console | None, every: float) -> None:
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.completed: float = 0
        self.current_note = ""
        self._stream = stream
        self._lock = threading.Lock()
        self._started = self._printed = time.monotonic()
        console = console or Console(file=stream)
        self._bar: RichProgress | None = None
        if console.is_terminal:
            amounts = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), amounts, TaskProgressColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                     console=console, redirect_stdout=False, redirect_stderr=False)
            self._task = self._bar.add_task(description, total=total, note="")

    @property
    def is_terminal(self) -> bool:
        return self._bar is not None

    def advance(self, amount: float = 1, note: str | None = None) -> None:
        with self._lock:
            self._set(self.completed + amount, None, note)

    def update(self, completed: float | None = None, total: float | None = None, note: str | None = None) -> None:
        with self._lock:
            self._set(self.completed if completed is None else completed, total, note)

    def note(self, text: str) -> None:
        """What is happening now: on the bar on a terminal; off one, in the next plain line."""
        self.update(note=text)

    def say(self, text: str) -> None:
        """News worth a line of its own, such as a phase starting or ending: on the bar on a
        terminal; off one, a line at once."""
        with self._lock:
            self.current_note = text
            if self._bar is not None:
                self._bar.update(self._task, note=text)
            else:
                self._print(f"  {self.description}: {text}")

    def log(self, line: str) -> None:
        """A line kept in the output as given, above the bar on a terminal."""
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(line, markup=False, highlight=False)
            else:
                self._print(line)

    def result(self, line: str) -> None:
        """A line of the command's own output, on stdout: above the bar when stdout is the same
        terminal, plainly when it goes elsewhere (a pipe, a file)."""
        with self._lock:
            if self._bar is not None and sys.stdout.isatty():
                self._bar.console.print(line, markup=False, highlight=False)
            else:
                print(line, flush=True)

    def plain_line(self, ended: str | None = None) -> str:
        """The state as one line: description, amount done (of the total, with the share; none
        when nothing is counted), seconds so far (or how it ``ended`` and when) and the note."""
        done = _amount(self.completed, self.unit)
        if self.total:
            share = min(self.completed / self.total, 1.0)
            if self.unit != "bytes":  # "500 of 2,000 documents"
                done = _amount(self.completed, "")
            done = f"{done} of {_amount(self.total, self.unit)} ({share:.0%}) "
        else:
            done = f"{done} " if self.completed else ""
        seconds = time.monotonic() - self._started
        text = f"  {self.description}: {done}{f'{ended} in' if ended else 'after'} {seconds:.0f}s"
        return text + (f"; {self.current_note}" if self.current_note else "")

    def _set(self, completed: float, total: float | None, note: str | None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        if note is not None:
            self.current_note = note
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=self.total)
            if note is not None:
                self._bar.update(self._task, note=note)
        elif time.monotonic() - self._printed >= self.every:
            self._print(self.plain_line())

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)
        self._printed = time.monotonic()

    def _finish(self, ended: str) -> None:
        with self._lock:
            if self._bar is not None:
                if self.total is None and ended == "done":  # a pulse: show it ended
                    self._bar.update(self._task, total=self.completed or 1, completed=self.completed or 1)
                self._bar.stop()
            else:
                self._print(self.plain_line(ended))


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "", *, stream: TextIO | None = None,
             console: Console | None = None, every: float = PLAIN_EVERY_SECONDS) -> Iterator[Progress]:
    """Show the work of the block: a bar when ``stream`` (default stderr) is a terminal (or
    ``console`` says it is), else a plain line every ``every`` seconds and one at the end.
    ``unit`` "bytes" shows sizes; any other word is printed after plain counts."""
    shown = Progress(description, total, unit, stream or sys.stderr, console, every)
    if shown._bar is not None:
        shown._bar.start()
    try:
        yield shown
    except BaseException:
        shown._finish("stopped")
        raise
    shown._finish("done")
