"""The backends a run can use, by name (`idealab run --backend NAME`), how each is built, and how the
choice is stored with a run and honoured on resume (docs/clusters.md, "Resuming")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from idealab.executor.base import Backend
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.executor.slurm import SlurmBackend, SlurmOptions, missing_commands

BACKEND_NAMES = ("local", "slurm", "ray")
BACKEND_KEY = "backend"  # runs.config: the run's backend and its options (`BackendChoice.record`)
# Options a resume may change: they decide how often the orchestrator asks and who is charged, never
# where a job runs or what it gets. Every other option is fixed with the run.
CHANGEABLE = frozenset({"slurm.poll_s", "slurm.account", "slurm.qos"})


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # the cluster's dashboard, where the Jobs API is served (http://HOST:8265)
    num_cpus: float = 1.0  # CPUs Ray reserves per job
    memory_mb: int | None = None  # memory Ray reserves per job (scheduling only)


@dataclass(frozen=True)
class BackendChoice:
    name: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    ray: RayOptions = field(default_factory=RayOptions)

    def __post_init__(self) -> None:
        if self.name not in BACKEND_NAMES:
            raise ValueError(f"--backend: expected one of {', '.join(BACKEND_NAMES)}, got {self.name!r}")

    def check_reachable(self) -> None:
        """Fail (ValueError) before anything is created when the chosen cluster cannot be used at all."""
        missing = missing_commands() if self.name == "slurm" else []
        if missing:
            raise ValueError(f"--backend slurm: {', '.join(missing)} not found here; run on a Slurm submit host")
        if self.name == "ray":
            from idealab.executor.ray_backend import RayUnavailable, connect  # ray is an optional extra

            assert self.ray.address is not None  # checked with the options
            try:
                connect(self.ray.address)
            except RayUnavailable as exc:
                raise ValueError(str(exc)) from None

    @property
    def local(self) -> bool:
        """Jobs run on this machine (its GPUs are the pool's); else a cluster decides where."""
        return self.name == "local"

    def options(self) -> dict[str, Any]:
        """The chosen backend's options by dotted name ("slurm.partition"); none for the local backend. A
        Ray address is given without its user:password part, if it has one: never a credential."""
        if self.name == "slurm":
            values = {f"slurm.{k}": v for k, v in asdict(self.slurm).items()}
            return {**values, "slurm.extra": list(self.slurm.extra)}
        if self.name == "ray":
            values = {f"ray.{k}": v for k, v in asdict(self.ray).items()}
            values["ray.address"] = _without_credentials(self.ray.address)
            if values["ray.address"] != self.ray.address:  # a resume must give it again
                values["ray.address_has_credentials"] = True
            return values
        return {}

    def hardware_identity(self, gpus_per_job: int, manifest_slurm_options: Sequence[str] = ()) -> dict[str, Any]:
        """A cluster run's hardware for `--reuse-baseline`: declared, not measured (the orchestrator never
        sees the nodes): the backend, where its jobs go (Slurm: the partition and the GRES a job asks
        for; Ray: the cluster's address) and the GPUs per job. Local runs: `sysinfo.hardware_identity`."""
        assert not self.local, "a local run's hardware is measured: sysinfo.hardware_identity"
        if self.name == "slurm":
            options = (*manifest_slurm_options, *self.slurm.extra)
            given = [o.partition("=")[2] for o in options if o.startswith("--gres=")]
            gres = given[-1] if given else (f"gpu:{gpus_per_job}" if gpus_per_job else None)
            where: dict[str, Any] = {"partition": self.slurm.partition, "gres": gres}
        else:
            where = {"address": _without_credentials(self.ray.address)}
        return {"backend": self.name, **where, "gpus_per_job": gpus_per_job}

    def record(self) -> dict[str, Any]:
        """What is stored with the run (JSON)."""
        return {"name": self.name, "options": self.options()}

    def describe(self) -> str:
        shown = ", ".join(f"{k.partition('.')[2]}={v!r}" for k, v in self.options().items() if v not in (None, []))
        return f"{self.name}" + (f" ({shown})" if shown else "")


@dataclass(frozen=True)
class BackendRequest:
    """What the command line gave about the backend: None (or no entry) where it gave nothing, which on a
    resume keeps the stored value. Option keys are dotted like `BackendChoice.options`."""

    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    gpus: str | None = None  # --gpus: GPUs of this machine, only for the local backend


def resolve_backend(request: BackendRequest, stored: Mapping[str, Any] | None) -> tuple[BackendChoice, bool]:
    """The run's backend: a new run's is the request's (default local); a resumed run's is the stored one,
    which the request may not contradict except in `CHANGEABLE` options (used for this invocation only).
    Options the request leaves out keep their stored values. Returns the choice and whether it came from
    the store without --backend. ValueError names every difference or misfit option."""
    given = {k: v for k, v in request.options.items() if v is not None}
    if stored is not None and request.name is not None and request.name != stored["name"]:
        raise ValueError(
            f"this work directory's run was started with --backend {stored['name']}; it cannot continue with "
            f"--backend {request.name} (leave --backend out to resume, or use another --workdir for a new run)"
        )
    name = request.name or (stored["name"] if stored is not None else "local")
    if name not in BACKEND_NAMES:
        raise ValueError(f"--backend: expected one of {', '.join(BACKEND_NAMES)}, got {name!r}")
    for other in ("slurm", "ray"):
        if name != other and any(k.startswith(f"{other}.") for k in given):
            raise ValueError(f"the --{other}-* options are for --backend {other}")
    if name != "local" and request.gpus is not None:
        raise ValueError(f"--gpus picks GPUs of this machine; with --backend {name} the cluster assigns them")
    values = dict(stored["options"]) if stored is not None else {}
    if stored is not None:
        changed = [
            f"--{key.replace('.', '-').replace('_', '-')}: {_shown(values.get(key))} when the run started, "
            f"{_shown(value)} now"
            for key, value in sorted(given.items())
            if key not in CHANGEABLE and _comparable(key, values.get(key)) != _comparable(key, value)
        ]
        if changed:
            raise ValueError(
                f"resuming would change the {name} backend options this run was started with:\n  "
                + "\n  ".join(changed)
                + "\ngive the same options again or leave them out (they are stored with the run), or use another "
                "--workdir for a new run"
            )
        if name == "ray" and "ray.address" not in given and values.get("ray.address_has_credentials"):
            raise ValueError("--backend ray: give --ray-address again (its credentials are not stored with the run)")
    values.update(given)
    return _choice(name, values), stored is not None and request.name is None


def _choice(name: str, values: Mapping[str, Any]) -> BackendChoice:
    if name == "slurm":
        slurm = SlurmOptions(**_fields_of(SlurmOptions, "slurm", values))
        slurm = replace(slurm, extra=tuple(slurm.extra))
        if slurm.cpus_per_job is not None and slurm.cpus_per_job < 1:
            raise ValueError(f"--slurm-cpus-per-job must be at least 1, got {slurm.cpus_per_job}")
        if slurm.poll_s <= 0:
            raise ValueError(f"--slurm-poll-s must be positive, got {slurm.poll_s}")
        return BackendChoice(name, slurm=slurm)
    if name == "ray":
        ray = RayOptions(**_fields_of(RayOptions, "ray", values))
        if not ray.address:
            raise ValueError("--backend ray needs --ray-address (the cluster's dashboard, e.g. http://head:8265)")
        if ray.num_cpus < 0:
            raise ValueError(f"--ray-num-cpus must be non-negative, got {ray.num_cpus}")
        if ray.memory_mb is not None and ray.memory_mb < 1:
            raise ValueError(f"--ray-memory-mb must be at least 1, got {ray.memory_mb}")
        return BackendChoice(name, ray=ray)
    return BackendChoice(name)


def _fields_of(options: type, prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The given values of an options dataclass's fields (the others keep their defaults)."""
    return {f.name: values[key] for f in fields(options) if values.get(key := f"{prefix}.{f.name}") is not None}


def _without_credentials(address: str | None) -> str | None:
    if address is None:
        return None
    parts = urlsplit(address)
    if parts.username is None and parts.password is None:
        return address
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def _comparable(key: str, value: Any) -> Any:
    """Values as stored: a Ray address without credentials, a list of sbatch options as a list."""
    if key == "ray.address" and isinstance(value, str):
        return _without_credentials(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _shown(value: Any) -> str:
    return "not given" if value is None else repr(value)


def make_backend(
    choice: BackendChoice, pool: SlotPool, workdir: Path, log_cap_bytes: int, manifest_slurm_options: Sequence[str]
) -> Backend:
    """The run's backend. Jobs never see `workdir` (its database, the other jobs' copies) except their own
    copy and logs. ValueError for a bad setting."""
    if choice.name == "slurm":
        options = replace(choice.slurm, extra=(*manifest_slurm_options, *choice.slurm.extra))
        return SlurmBackend(options, log_cap_bytes=log_cap_bytes, conceal=[workdir])
    if choice.name == "ray":
        from idealab.executor.ray_backend import RayBackend, RayUnavailable

        assert choice.ray.address is not None  # checked with the options
        try:
            return RayBackend(
                choice.ray.address, log_cap_bytes=log_cap_bytes, num_cpus=choice.ray.num_cpus,
                memory_mb=choice.ray.memory_mb,
            )  # fmt: skip
        except RayUnavailable as exc:
            raise ValueError(str(exc)) from None
    return LocalBackend(pool, log_cap_bytes=log_cap_bytes, conceal=[workdir])
