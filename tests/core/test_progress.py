"""The progress bar keeps logs short and always shows where the work ended."""
import io

from iaunet.core.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_a_few_lines_not_one_per_step():
    log = io.StringIO()
    bar = Progress(1000, "reading", "img", stream=log)
    for _ in range(1000):
        bar.update()
    bar.close()
    draws = log.getvalue().count("\r")
    assert 1 <= draws <= 3 and "1000/1000" in log.getvalue().split("\r")[-1]


def test_the_final_state_is_drawn_when_closed_early():
    log = io.StringIO()
    bar = Progress(10, "epochs", stream=log)
    for _ in range(7):
        bar.update(loss=0.5)
    bar.close()
    assert log.getvalue().split("\r")[-1].startswith("epochs [") and " 7/10 loss=0.5 " in log.getvalue()


def test_a_terminal_redraws_often_and_disabled_prints_nothing():
    term = _Terminal()
    bar = Progress(3, "x", stream=term)
    bar.update()
    bar.update()
    bar.update()
    assert term.getvalue().count("\r") >= 2  # first and last at least
    quiet = io.StringIO()
    bar = Progress(3, stream=quiet, enabled=False)
    bar.update()
    bar.close()
    assert quiet.getvalue() == ""
