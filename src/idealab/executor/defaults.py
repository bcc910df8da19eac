"""Backend defaults the command line names in its help, without importing the backends themselves."""

from __future__ import annotations

SLURM_POLL_S = 5.0  # seconds between squeue calls about a run's Slurm jobs
