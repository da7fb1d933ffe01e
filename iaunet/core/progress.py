"""A dependency-free progress bar for long work (training, calibration, benchmarks)."""
import sys
import time


class Progress:
    """Render ``desc [####....] i/n  key=value ... rate/s`` on stderr, in place.

    Updated by hand with ``update``; ``close`` ends the line. Prints nothing when disabled.
    Redraws at most every 0.1 s on a terminal and every 5 s into a log file or pipe (a
    carriage return does not overwrite there), and always draws the final state.
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
        self.last_draw = None
        self.drawn_count = None
        isatty = getattr(self.stream, "isatty", None)
        self.interval = 0.1 if isatty is not None and isatty() else 5.0

    def update(self, steps=1, items=None, **fields):
        self.count += steps
        self.items += steps if items is None else items
        self.fields.update(fields)
        now = time.perf_counter()
        if self.last_draw is None or now - self.last_draw >= self.interval or self.count >= self.total:
            self._render()

    def close(self):
        if self.enabled:
            if self.drawn_count != self.count:
                self._render()
            self.stream.write("\n")
            self.stream.flush()

    def _render(self):
        if not self.enabled:
            return
        self.last_draw = time.perf_counter()
        self.drawn_count = self.count
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        width = 24
        done = int(width * self.count / self.total) if self.total else width
        bar = "#" * done + "." * (width - done)
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.fields.items())
        line = (f"\r{self.desc} [{bar}] {self.count}/{self.total} {extra} "
                f"{self.items / elapsed:.1f} {self.unit}/s")
        self.stream.write(line)
        self.stream.flush()
