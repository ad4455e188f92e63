"""Progress off a terminal: whole lines at the first item, every twentieth of the work, and the last."""

import io

from usema.utils.progress import duration, on_terminal, progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_every_twentieth_of_the_items():
    log = io.StringIO()
    seen = list(progress(list(range(45)), desc="predict", unit="case", stream=log))
    lines = log.getvalue().splitlines()
    assert seen == list(range(45))
    assert [line.split(",")[0] for line in lines] == [
        "predict: 1/45 cases", *(f"predict: {n}/45 cases" for n in range(2, 45, 2)), "predict: 45/45 cases"]
    assert lines[0].endswith("left") and not lines[-1].endswith("left")


def test_a_terminal_gets_tqdms_bar_and_a_log_none():
    terminal = Terminal()
    assert on_terminal(terminal) and not on_terminal(io.StringIO())
    list(progress([1, 2], desc="predict", unit="case", stream=terminal))
    assert "\r" in terminal.getvalue() and "2/2" in terminal.getvalue()


def test_durations_read_in_seconds_minutes_or_hours():
    assert [duration(s) for s in (42, 600, 7200)] == ["42 s", "10.0 min", "2.0 h"]
