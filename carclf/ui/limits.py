"""The public server's limits on training: one run at a time, and a workspace that is not full.

A Community Cloud container has about 2.7 GB of memory and a share of a CPU: two trainings at once would get
the app restarted. Local mode (a workstation) has no such rule.
"""

from __future__ import annotations

from carclf import runs
from carclf.errors import RunError
from carclf.ui import settings


def active_run(runs_dir=None) -> str | None:
    """The id of a run that is training now (queued or running, process alive), or None."""
    for status in runs.list_runs(runs_dir or settings.runs_dir()):
        if runs.is_active(status):
            return status["run_id"]
    return None


def launch_blocked_reason(runs_dir=None) -> str:
    """One line saying why a run cannot start now in public mode ('' when it can, and always in local mode)."""
    if not settings.is_public():
        return ""
    running = active_run(runs_dir)
    if running:
        return f"Run {running} is training: this server trains one run at a time; wait for it to finish or stop it."
    return ""


def check_launch(runs_dir=None) -> None:
    """Raise RunError when a run may not start now (another is training), QuotaError when the workspace is full."""
    reason = launch_blocked_reason(runs_dir)
    if reason:
        raise RunError(reason)
    quota = settings.quota()
    if quota is not None:
        quota.check(0)
