"""Progress of long commands: plain lines off a terminal, a rich bar on one."""

import io

import pytest
from rich.console import Console

from cli.progress import progress


def test_off_a_terminal_plain_lines_come_now_and_then_and_at_the_end() -> None:
    # Given a stream that is not a terminal, and a line due after every update
    stream = io.StringIO()
    # When work of a known total advances with notes
    with progress("ingest changes.jsonl", total=4 * 2**20, unit="bytes", stream=stream, every=0) as shown:
        shown.advance(2**20, note="500 lines")
        shown.advance(2**20)
    # Then each update printed a line with the share done, and the end printed the last state
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("  ingest changes.jsonl: 1.0 MiB of 4.0 MiB (25%) after ")
    assert lines[0].endswith("s; 500 lines")
    assert lines[1].startswith("  ingest changes.jsonl: 2.0 MiB of 4.0 MiB (50%) after ")
    assert lines[2].startswith("  ingest changes.jsonl: 2.0 MiB of 4.0 MiB (50%) done in ")
    assert not shown.is_terminal


def test_off_a_terminal_quick_work_prints_its_notes_its_logs_and_one_last_line() -> None:
    stream = io.StringIO()
    with progress("reconcile 2026-11-02", stream=stream) as shown:
        shown.say("wide: 120 buckets compared, 0 differ")
        shown.log("  kept as given")
        shown.note("ads: 0 differences")
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["  reconcile 2026-11-02: wide: 120 buckets compared, 0 differ", "  kept as given"]
    # (nothing counted, no total: no amount, no share)
    assert lines[2].startswith("  reconcile 2026-11-02: done in ") and lines[2].endswith("s; ads: 0 differences")
    assert len(lines) == 3


def test_an_unknown_total_can_be_set_later_and_counts_carry_their_unit() -> None:
    stream = io.StringIO()
    with progress("reindex", unit="orders", stream=stream, every=3600) as shown:
        shown.update(total=2000)
        shown.advance(500)
    [line] = stream.getvalue().splitlines()
    assert line.startswith("  reindex: 500 of 2,000 orders (25%) done in ")


def test_work_that_fails_says_it_stopped() -> None:
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), progress("demo", total=10, unit="orders", stream=stream) as shown:
        shown.advance(3)
        raise KeyboardInterrupt
    assert stream.getvalue().startswith("  demo: 3 of 10 orders (30%) stopped in ")


def test_on_a_terminal_a_bar_is_drawn() -> None:
    # Given a console that is a terminal, writing to a buffer
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140, color_system=None)
    # When work advances to its end with a note
    with progress("search reindex", total=10, unit="orders", console=console) as shown:
        shown.advance(4)
        shown.log("a line kept above the bar")
        shown.advance(6, note="tdc-orders-v2")
    # Then the bar was drawn with its description, amounts, share and note, and the logged line kept
    output = buffer.getvalue()
    assert shown.is_terminal
    assert "search reindex" in output and "10/10" in output and "100%" in output and "tdc-orders-v2" in output
    assert "a line kept above the bar" in output
    assert "━" in output  # the bar itself
