"""What one analysis carries from section to section: what it studies, the numbers found, the files
still to write, and where the time went."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fer.data.faceset import FaceSet
from fer.module import FERModule


class Timer:
    """Wall and CPU seconds per named part (CPU time counts every thread: it shows contention)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            spent = self.parts.setdefault(part, {"wall_s": 0.0, "cpu_s": 0.0})
            spent["wall_s"] += time.perf_counter() - wall
            spent["cpu_s"] += time.process_time() - cpu


@dataclass
class Analysis:
    """One checkpoint studied on `faces`: the sections add numbers to `results` (analysis.json, which
    must stay JSON-able) and queue their files (figures, CSVs), written once every number is computed, so
    that a failure on the way leaves no file of a half-done analysis."""

    model: FERModule
    faces: FaceSet
    settings: DictConfig  # the `analysis` config group (conf/analysis/)
    out: Path
    seed: int
    results: dict[str, Any]  # holds "notes" and "files" from the start
    timer: Timer = field(default_factory=Timer)
    pending: list[Callable[[], Path]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.results["notes"].append(text)

    def file(self, key: str, name: str, write: Callable[[Path], Path]) -> None:
        """Queue `write(out / name)` and list `name` under `key` in the results' files."""
        self.results["files"][key] = name
        self.pending.append(lambda: write(self.out / name))

    def write_files(self) -> None:
        for write in self.pending:
            write()
