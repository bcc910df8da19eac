"""Running jobs: the backend interface, the local backend, slots, sandboxing and outcome judging."""

from idealab.executor.base import Backend, JobResult, JobSpec, JobStart, OnStart
from idealab.executor.gpus import choose_gpu_ids, detect_gpu_ids, parse_gpu_list
from idealab.executor.local import LocalBackend, kill_stale_job
from idealab.executor.runner import Outcome, classify, job_spec, protected_hashes, run_job
from idealab.executor.sandbox import copy_environment, hash_files, job_environment, scrubbed_environ
from idealab.executor.slots import Lease, SlotPool

__all__ = [
    "Backend",
    "JobResult",
    "JobSpec",
    "JobStart",
    "Lease",
    "LocalBackend",
    "OnStart",
    "Outcome",
    "SlotPool",
    "choose_gpu_ids",
    "classify",
    "copy_environment",
    "detect_gpu_ids",
    "hash_files",
    "job_environment",
    "job_spec",
    "kill_stale_job",
    "parse_gpu_list",
    "protected_hashes",
    "run_job",
    "scrubbed_environ",
]
