"""The progress bar keeps logs short and always shows where the work ended."""
import io

from iaunet.core import progress
from iaunet.core.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_one_line_for_a_short_loop():
    log = io.StringIO()
    bar = Progress(1000, "reading", "img", stream=log)
    for _ in range(1000):
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue() and "1000/1000" in lines[0]


def test_a_log_file_gets_a_line_per_interval(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    log = io.StringIO()
    bar = Progress(12, "epochs", stream=log)
    for _ in range(12):
        now[0] += 10.0  # each step 10 s later
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    # 12 updates 10 s apart: a line every 30 s (4), and the final state once
    assert 4 <= len(lines) <= 5 and lines[-1].startswith("epochs [") and " 12/12 " in lines[-1]


def test_the_final_state_is_drawn_when_closed_early():
    log = io.StringIO()
    bar = Progress(10, "epochs", stream=log)
    for _ in range(7):
        bar.update(loss=0.5)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("epochs [") and " 7/10 loss=0.5 " in log.getvalue()


def test_a_terminal_redraws_in_place_and_disabled_prints_nothing():
    term = _Terminal()
    bar = Progress(3, "x", stream=term)
    bar.update()
    bar.update()
    bar.update()
    bar.close()
    assert term.getvalue().count("\r") >= 2 and term.getvalue().endswith("\n")  # first and last at least
    quiet = io.StringIO()
    bar = Progress(3, stream=quiet, enabled=False)
    bar.update()
    bar.close()
    assert quiet.getvalue() == ""
