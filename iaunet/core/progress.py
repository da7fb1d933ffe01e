"""A dependency-free progress bar for long work (training, calibration, benchmarks)."""
import sys
import time

TERMINAL_INTERVAL = 0.1   # seconds between redraws in place on a terminal
LOG_INTERVAL = 30.0       # seconds between lines written into a log file or pipe


class Progress:
    """Render ``desc [####....] i/n  key=value ... rate/s`` on stderr.

    On a terminal the line is redrawn in place (at most every 0.1 s). Into a log file or
    a pipe, where a carriage return does not overwrite, a full line is written at most
    every 30 s, so a short loop leaves one line. The final state is always drawn on
    ``close``. Updated by hand with ``update``; prints nothing when disabled.
    """

    def __init__(self, total, desc="", unit="it", enabled=True, stream=None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.count = 0
        self.items = 0
        self.fields = {}
        self.start = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = isatty is not None and isatty()
        self.interval = TERMINAL_INTERVAL if self.terminal else LOG_INTERVAL
        self.last_draw = None if self.terminal else self.start
        self.drawn_count = None

    def update(self, steps=1, items=None, **fields):
        self.count += steps
        self.items += steps if items is None else items
        self.fields.update(fields)
        now = time.perf_counter()
        if self.last_draw is None or now - self.last_draw >= self.interval:
            self._render()

    def close(self):
        if not self.enabled:
            return
        if self.drawn_count != self.count:
            self._render()
        if self.terminal:
            self.stream.write("\n")
        self.stream.flush()

    def abandon(self):
        """The work failed: clear the bar from a terminal and draw no final line, so the
        error that follows is the only line the user reads."""
        if self.enabled and self.terminal and self.drawn_count is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.enabled = False

    def _render(self):
        if not self.enabled:
            return
        self.last_draw = time.perf_counter()
        self.drawn_count = self.count
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        width = 24
        done = min(width, int(width * self.count / self.total)) if self.total else width
        bar = "#" * done + "." * (width - done)
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        line = f"{self.desc} [{bar}] {self.count}/{self.total} {extra} {self.items / elapsed:.1f} {self.unit}/s"
        self.stream.write(f"\r{line}" if self.terminal else f"{line}\n")
        self.stream.flush()
