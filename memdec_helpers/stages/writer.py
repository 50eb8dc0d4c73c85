"""The one streamed writer: a stage's arrays filled chunk by chunk, resumable after a kill.

Every big stage (the datastore's keys, the neighbours, the targets) is written the same way:
- its arrays are `.<name>.part` memmaps, their disk space reserved up front (a full disk is a
  clear error at the start, not a crash half-way);
- after each chunk the arrays are flushed, then a progress file records how far the build got
  (bytes on disk before the progress file says so);
- a killed build resumes from the progress file when its config and the `.part` sizes match;
- at the end the `.part` files are renamed into place, the progress file removed and the
  manifest written last: until then nothing looks complete.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .store import PROGRESS, atomic_write_json, open_memmap, resume_point, write_manifest


class StreamedWriter:
    """Writes the arrays `{name: (dtype, shape)}` of the stage `directory` for `config`;
    progress is counted in `unit`s (windows, rows) of the caller's choosing."""

    def __init__(self, directory: Path, config: dict[str, Any],
                 arrays: dict[str, tuple[Any, tuple[int, ...]]], unit: str,
                 expected: dict[str, Any] | None = None) -> None:
        self.directory, self.config, self.unit = Path(directory), config, unit
        self.specs = {name: (np.dtype(dtype), tuple(int(s) for s in shape))
                      for name, (dtype, shape) in arrays.items()}
        self.expected = {"config": config, **(expected or {})}  # what a resumable build matches
        self.arrays: dict[str, np.memmap] = {}

    @staticmethod
    def part(name: str) -> str:
        return f".{name}.part"

    def start(self) -> int:
        """Open the `.part` memmaps, resumed when a sound earlier build left them (else a fresh
        stage); returns how many units are already done."""
        sizes = {self.part(n): int(np.prod(shape)) * dtype.itemsize
                 for n, (dtype, shape) in self.specs.items()}
        done = resume_point(self.directory, self.expected, sizes, self.unit)
        mode = "r+" if done else "w+"
        self.arrays = {n: open_memmap(self.directory / self.part(n), dtype, shape, mode)
                       for n, (dtype, shape) in self.specs.items()}
        return done

    def __getitem__(self, name: str) -> np.memmap:
        return self.arrays[name]

    def commit(self, done: int) -> None:
        """Flush every array, then record that `done` units are on disk."""
        for array in self.arrays.values():
            array.flush()
        atomic_write_json(self.directory / PROGRESS, {**self.expected, self.unit: int(done)})

    def finish(self, **info: Any) -> dict[str, Any]:
        """Rename the finished arrays into place, drop the progress file, write the manifest."""
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()  # close the memmaps before renaming their files
        for name in self.specs:
            (self.directory / self.part(name)).rename(self.directory / name)
        (self.directory / PROGRESS).unlink(missing_ok=True)
        return write_manifest(self.directory, self.config, **info)
