"""The job registry: what a WorkReq may ask for, how its args are checked, and how it runs.

Each job is one module whose docstring states, as the seed's files do, its `Register name`, its
`Args` (mandatory or optional, with an example) and its `Result`. The registry is an explicit
list built at start-up and passed in: nothing registers itself on import.

A job that guards what follows it declares itself a **gate** (class attribute `gate = True`):
`tokenBucket` and `validateDecom` do. Any failure of a gate, whatever its kind (a JobError fatal
or not, a crash, a timeout, retries or deliveries exhausted, a failure the runner reports for it),
ends its workflow: the executor decides that from its own job registry (`is_gate`), not from the
failure event, and dispatches nothing in the gate's block after the gate until the gate has
completed (docs/safety.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from services.buckets import BucketConfig, BucketConfigError, BucketStore, load_bucket_configs
from services.common.plugins import Registry
from services.inventory import Inventory, InventoryError, InventorySource

from .output import NO_SECRETS, Output, Secrets

if TYPE_CHECKING:
    from services.common.settings import Settings

log = structlog.get_logger()


class ArgError(ValueError):
    """An argument is missing, unknown or has a bad value; `arg` names it ("" for the job itself)."""

    def __init__(self, arg: str, message: str) -> None:
        super().__init__(message)
        self.arg = arg
        self.message = message


class JobError(Exception):
    """A job failed. `fatal` cancels the rest of its Block and stops later Blocks (the seed's rule).

    `retryable`: the runner tries the job again, up to the job's `max_attempts`, waiting
    `retry_base_s` x 2^(attempt-1) between attempts; past that the job fails with this error."""

    def __init__(self, message: str, *, fatal: bool = False, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal
        self.retryable = retryable


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What a running job may know about its run; one per attempt, never shared."""

    workflow_id: str
    block: int
    job: int
    attempt: int
    time_scale: float
    log: structlog.typing.FilteringBoundLogger = field(default_factory=structlog.get_logger)
    # what the job prints or receives (bounded; redacted when read): the runner puts its tail in the
    # terminal event (`output`) and the whole of what was kept in KV `wf_output` (`wf logs`)
    output: Output = field(default_factory=Output)
    # the runner's secrets: `secrets.resolve(arg)` turns `secret:NAME` into its value
    secrets: Secrets = NO_SECRETS

    @property
    def attempt_id(self) -> str:
        """Unique per attempt: lets a job make its own side effects idempotent."""
        return f"{self.workflow_id}.{self.block}.{self.job}.{self.attempt}"


class Job(Protocol):
    """A job. It may also set `max_attempts` (default 1: no retry), `retry_base_s` (default 1.0),
    `gate` (default False: True makes any failure of it end the workflow; see the module's docstring)
    and `allowed_by` (default "": the name of the policy that must allow each use of it; a WorkReq
    using it is rejected unless its name's policies include that one: default-deny)."""

    name: str
    mandatory_args: frozenset[str]
    optional_args: frozenset[str]

    def validate(self, args: Mapping[str, str]) -> None:
        """Raise ArgError for a bad value; unknown and missing args are checked by the registry."""

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        """Do the work; raise JobError to fail."""


def is_gate(job: object) -> bool:
    """Whether a job guards what follows it: its class says `gate = True`."""
    return bool(getattr(job, "gate", False))


def allowed_by(job: object) -> str:
    """The policy that must allow each use of a job ("" for none: the job is allowed as the other
    policies decide). Such a job is denied unless its WorkReq name's policies include that one."""
    return str(getattr(job, "allowed_by", "") or "")


_WHOLE_NUMBER_RE = re.compile(r"[0-9]{1,18}")


def parse_fatal(text: str) -> bool:
    """The `fatal` argument of a job that takes one (exec, ssh, http): "true" or "false" exactly."""
    if text not in ("true", "false"):
        raise ArgError("fatal", f"'fatal' must be \"true\" or \"false\", got {text[:40]!r}")
    return text == "true"


def parse_whole_number(arg: str, text: str, low: int, high: int) -> int:
    """A numeric job argument: plain decimal digits (0-9 only: no sign, underscore, exponent,
    decimal point, white space or other scripts' digits) whose value is from `low` to `high`;
    ArgError naming the argument otherwise."""
    bounds = f"a whole number from {low:,} to {high:,} in plain digits"
    if not _WHOLE_NUMBER_RE.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ArgError(arg, f"{arg!r} must be {bounds}, got {shown!r}")
    value = int(text)
    if not low <= value <= high:
        raise ArgError(arg, f"{arg!r} must be {bounds}, got {value:,}")
    return value


class JobRegistry(Registry[Job]):
    """Job name -> job (services.common.plugins.Registry), with what validation and the executor ask."""

    kind = "job"

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        super().__init__(jobs)

    def declared_args(self, name: str) -> frozenset[str]:
        job = self._items[name]
        return job.mandatory_args | job.optional_args

    def gate_predicate(self) -> Callable[[str], bool]:
        """For the executor: whether a job name is a gate. A name this registry does not know counts
        as a gate (fail closed: a job registered elsewhere cannot fail open here)."""
        gates = frozenset(name for name, job in self._items.items() if is_gate(job))
        known = frozenset(self._items)
        return lambda name: name in gates or name not in known

    def validate(self, name: str, args: Mapping[str, str]) -> None:
        """Check a job's name and args; raises ArgError naming the argument."""
        job = self._items.get(name)
        if job is None:
            raise ArgError("", f"unknown job {name!r} (registered: {', '.join(self.names())})")
        unknown = sorted(set(args) - job.mandatory_args - job.optional_args)
        if unknown:
            raise ArgError(unknown[0], f"unknown argument {unknown[0]!r}")
        missing = sorted(job.mandatory_args - set(args))
        if missing:
            raise ArgError(missing[0], f"missing mandatory argument {missing[0]!r}")
        job.validate(args)


@dataclass(frozen=True, kw_only=True)
class JobEnv:
    """What jobs are built with. `bucket_store` is set only where jobs run (runners), never needed to validate."""

    inventory: InventorySource
    buckets: Mapping[str, BucketConfig]
    bucket_store: BucketStore | None = None
    settings: Mapping[str, str] = field(default_factory=dict)  # the runner's WF_* settings (Settings.job_settings)


def inventory_or_arg_error(source: InventorySource, arg: str) -> Inventory:
    """The current inventory for validating `arg`; an unusable inventory is that argument's error."""
    try:
        return source.current()
    except InventoryError as exc:
        raise ArgError(arg, f"the inventory is unusable: {exc}") from None


def builtin_jobs(env: JobEnv) -> list[Job]:
    from . import disk_erase, exec_cmd, http_call, sleep, ssh_cmd, token_bucket, validate_decom

    return [
        disk_erase.DiskEraseJob(env.inventory),
        exec_cmd.ExecJob(env.settings),
        http_call.HttpJob(env.settings),
        ssh_cmd.SshJob(env.inventory, env.settings),
        sleep.SleepJob(),
        token_bucket.TokenBucketJob(env.buckets, env.bucket_store),
        validate_decom.ValidateDecomJob(env.inventory),
    ]


JOBS_ENTRY_POINTS = "wf.jobs"


def load_jobs(env: JobEnv) -> JobRegistry:
    """The built-in jobs plus those of installed packages (entry-point group `wf.jobs`: each entry
    is a callable taking a JobEnv and returning a job). A name registered twice is refused."""
    registry = JobRegistry(builtin_jobs(env))
    registry.add_plugins(JOBS_ENTRY_POINTS, env)
    return registry


def job_registry_or_exit(
    settings: Settings, bucket_store: BucketStore | None = None, *, check_inventory: bool = True
) -> JobRegistry:
    """The job registry, with the inventory and buckets it needs, for a service's start-up (policy,
    jobrunner, and the executor, which tells gates apart with it); a clear message and exit 2
    otherwise. `check_inventory=False` for a service that never validates or runs a job (the executor)."""
    try:
        inventory = InventorySource(settings.inventory_dir)
        if check_inventory:
            inventory.current()  # fail start-up, not the first submit, on a bad inventory
        buckets = load_bucket_configs(settings.config_dir / "buckets.json")
        return load_jobs(JobEnv(inventory=inventory, buckets=buckets, bucket_store=bucket_store,
                                settings=settings.job_settings))
    except (InventoryError, BucketConfigError, ValueError) as exc:
        log.error("startup_failed", error=str(exc))
        raise SystemExit(2) from None
