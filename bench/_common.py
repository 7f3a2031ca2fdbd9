"""Shared by the benchmarks in this folder (not a benchmark itself: `make bench` skips `_`-prefixed files)."""
import threading, time


class PeakRSS:
    "Sample this process's RSS every 5 ms in a thread; `.peak` is the maximum seen (bytes)."
    def __init__(self):
        import psutil
        self.p = psutil.Process(); self.peak = self.start = self.p.memory_info().rss; self._stop = False
    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.p.memory_info().rss); time.sleep(0.005)
    def __enter__(self):
        self.t = threading.Thread(target=self._run, daemon=True); self.t.start(); return self
    def __exit__(self, *a):
        self._stop = True; self.t.join(); self.peak = max(self.peak, self.p.memory_info().rss)
