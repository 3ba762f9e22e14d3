"""Hydra callbacks.

Hydra's basic sweeper runs every job of a multirun, then re-raises the first failure (so the
process exits non-zero), but it leaves nothing in the failed job's own directory. This callback
writes the traceback into that job's log and a ``FAILED`` file beside it. Hydra calls it where the
job runs (inside ``run_job``): in the sweep's process for the basic launcher, in the job's own
process for joblib, submitit (SLURM) and Ray, so the file lands in the job's directory on that
machine. A job killed from outside (SIGKILL, out of memory, time limit) runs no callback.
"""
from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class RecordFailure(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # `return_value` would re-raise it
        output_dir = Path(config.hydra.runtime.output_dir)
        log.error("job %s failed (overrides: %s)", config.hydra.job.get("num", 0), " ".join(job_return.overrides),
                  exc_info=(type(error), error, error.__traceback__))
        (output_dir / "FAILED").write_text("".join(traceback.format_exception(type(error), error, error.__traceback__)))
