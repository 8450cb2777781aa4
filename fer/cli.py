"""What the entry points (train.py, analyze.py) do with bad input: say what was wrong, without a traceback."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode

from fer.data.errors import DataError
from fer.rundir import RunDirError
from fer.schema import ConfigError

# Errors whose message says what was wrong and where (a config key, a file and line, a run folder): the
# traceback would only bury it. Hydra's InstantiationException is a config value that a model's or an
# optimizer's class refused (model.activation=foo): it names the class, and the class's error the value.
# Anything else is a bug, and keeps its traceback.
BAD_INPUT = (ConfigError, DataError, RunDirError, FileNotFoundError, InstantiationException)


@contextmanager
def bad_input_as_message(traceback_file: Path | None = None) -> Iterator[None]:
    """In a single run, end the process on BAD_INPUT with `error: MESSAGE` on stderr and exit status 1, and
    name `traceback_file` where this run wrote it; Hydra would print a traceback above the message.

    A `-m` sweep keeps Hydra's handling: a SystemExit would end the sweep at its first failed job, where
    Hydra records the failure and runs the other jobs."""
    started = time.time()
    try:
        yield
    except BAD_INPUT as e:
        if HydraConfig.get().mode != RunMode.RUN:
            raise
        print(f"error: {e}", file=sys.stderr)
        # Named only when this run wrote it (some file systems keep mtimes to the second).
        wrote = traceback_file is not None and traceback_file.exists()
        if wrote and traceback_file.stat().st_mtime > started - 1:
            print(f"(the traceback is in {traceback_file})", file=sys.stderr)
        raise SystemExit(1) from None
