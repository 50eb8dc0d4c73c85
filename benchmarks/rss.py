"""Peak memory of a process, sampled: the anonymous RSS (what the process really holds; memmap
pages written to disk are page cache the kernel can drop) and the total RSS, in MB."""
from __future__ import annotations

import threading
import time


def rss_mb() -> tuple[float, float]:
    """(anonymous RSS, total RSS) of this process in MB, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return int(fields["RssAnon"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


class PeakSampler:
    """A daemon thread recording the peak RSS every 10 ms; `reset()` starts a new peak."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = {"anon": 0.0, "total": 0.0}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            anon, total = rss_mb()
            self.peak["anon"] = max(self.peak["anon"], anon)
            self.peak["total"] = max(self.peak["total"], total)
            time.sleep(self.interval)

    def reset(self) -> dict[str, float]:
        """Settle, then return the current RSS and make it the new peak."""
        time.sleep(5 * self.interval)
        anon, total = rss_mb()
        self.peak.update(anon=anon, total=total)
        return {"anon": anon, "total": total}

    def read(self) -> dict[str, float]:
        time.sleep(5 * self.interval)
        return dict(self.peak)
