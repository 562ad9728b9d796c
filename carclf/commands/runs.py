"""``python -m carclf runs list | show RUN | stop RUN | resume RUN | delete RUN | pack RUN OUT.zip | import FILE``.

A terminal view of what the dashboard's Train page shows: every run's state and progress, one run's
status, history and log tail, and the stop/resume/delete actions; ``pack``/``import`` move a run between
machines as one file (``carclf.run_archive``). Reads files only (no TensorFlow).
"""

from __future__ import annotations

import argparse

from carclf.commands.outputs import add_overwrite_argument, new_output_file
from carclf.run_summary import describe_state, headline_score, positive_count

HELP = "List, inspect, stop, resume, delete, pack or import training runs."

# Lines of log shown by ``runs show``.
LOG_TAIL_LINES = 15
# Seconds ``runs stop`` waits for the run to save and exit.
STOP_WAIT_SECONDS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="all runs, newest first", description="All runs, newest first.")
    _runs_dir_after_action(listing)
    for name, text in (("show", "status, history and log tail of one run"), ("stop", "stop a running run (resumable)"),
                       ("resume", "continue a stopped, failed or interrupted run in the background"),
                       ("delete", "delete a run folder that is not running")):
        sub = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("run_id", metavar="RUN", help="run id as shown by 'runs list'")
        _runs_dir_after_action(sub)
    pack = actions.add_parser(
        "pack", help="write a run (history, status, config, log, TensorBoard logs, report) as one .zip",
        description="Write a run folder as one .zip file: config, status, history, log, TensorBoard logs and an "
                    "evaluation report in RUN/report; checkpoints only with --checkpoints.")
    pack.add_argument("run_id", metavar="RUN", help="run id as shown by 'runs list', or a run folder")
    pack.add_argument("out", metavar="OUT.zip", help="file to write")
    add_overwrite_argument(pack)
    pack.add_argument("--checkpoints", action="store_true", help="also pack the checkpoints (large)")
    _runs_dir_after_action(pack)
    imported = actions.add_parser(
        "import", help="install a run archive as a read-only run (shown with its curves, never resumed)",
        description="Check a run archive made by 'runs pack' and install it in the runs folder as a read-only "
                    "run trained elsewhere.")
    imported.add_argument("file", metavar="ARCHIVE", help="file made by 'runs pack'")
    _runs_dir_after_action(imported)


def _runs_dir_after_action(parser: argparse.ArgumentParser) -> None:
    """Accept --runs-dir after the action too; SUPPRESS keeps the top-level value when it is not given."""
    parser.add_argument("--runs-dir", default=argparse.SUPPRESS, metavar="DIR", help="folder of run folders")


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.action](args)


def _list(args) -> int:
    from carclf import runs

    found = runs.list_runs(args.runs_dir)
    if not found:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(f"{'RUN':<44} {'STATE':<12} {'STAGE':<6} {'EPOCH':<8} {'MODEL VAL ACC':<16} {'BEST EPOCH':<10}")
    for status in found:
        print(f"{status['run_id']:<44} {status.get('state', '?'):<12} {_stage(status):<6} {_epoch(status):<8} "
              f"{_model_accuracy(status):<16} {_accuracy(status.get('best_val_accuracy')):<10}")
    print("MODEL VAL ACC: the exported model's validation score; BEST EPOCH: the best single epoch's.")
    return 0


def _show(args) -> int:
    from carclf import runs

    status = runs.read_status(args.run_id, args.runs_dir)
    print(f"run {args.run_id}: {describe_state(status)}  stage {_stage(status)}  epoch {_epoch(status)}  "
          f"model val accuracy {_model_accuracy(status)}  "
          f"(best single epoch {_accuracy(status.get('best_val_accuracy'))})")
    for key in ("started_at", "heartbeat_at", "finished_at", "devices", "bundle", "error"):
        if status.get(key):
            print(f"  {key}: {status[key]}")
    if runs.is_imported(status):
        from carclf.run_archive import describe_origin

        print(f"  imported: {describe_origin(status)}")
    history = runs.read_history(args.run_id, args.runs_dir)
    if len(history):
        print(history.tail(10).to_string(index=False))
    tail = runs.read_log_tail(args.run_id, args.runs_dir, LOG_TAIL_LINES)
    if tail.strip():
        print("--- log ---")
        print(tail)
    return 0


def _stop(args) -> int:
    from carclf import runs

    status = runs.stop_run(args.run_id, args.runs_dir, timeout=STOP_WAIT_SECONDS)
    print(f"run {args.run_id}: {status.get('state')}")
    return 0


def _resume(args) -> int:
    from carclf import runs

    pid = runs.resume_run(args.run_id, args.runs_dir)
    print(f"run {args.run_id} resumed in the background (pid {pid})")
    return 0


def _delete(args) -> int:
    from carclf import runs

    runs.delete_run(args.run_id, args.runs_dir)
    print(f"run {args.run_id} deleted")
    return 0


def _pack(args) -> int:
    from carclf import run_archive

    paths = run_archive.find_run(args.run_id, args.runs_dir)
    out = run_archive.pack_run(paths, new_output_file(args.out, args.overwrite), checkpoints=args.checkpoints)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from run {paths.run_id}")
    return 0


def _import(args) -> int:
    from carclf import run_archive, runs

    run_id = run_archive.import_run(args.file, args.runs_dir)
    status = runs.read_status(run_id, args.runs_dir)
    print(f"imported run {run_id} ({describe_state(status)}, model val accuracy {_model_accuracy(status)}) "
          f"into {runs.run_paths(run_id, args.runs_dir).root}; it is read-only here")
    return 0


ACTIONS = {"list": _list, "show": _show, "stop": _stop, "resume": _resume, "delete": _delete, "pack": _pack,
           "import": _import}


def _stage(status: dict) -> str:
    return f"{status['stage']}/{status.get('stages_total', '?')}" if status.get("stage") else "-"


def _epoch(status: dict) -> str:
    """'7/12': epochs done of those planned (as the state line says them; epochs_total shrinks when stages
    stop early)."""
    planned = positive_count(status.get("epochs_planned")) or positive_count(status.get("epochs_total"))
    return f"{positive_count(status.get('epoch'))}/{planned}" if planned else "-"


def _model_accuracy(status: dict) -> str:
    """The exported model's validation score, '(TTA)' when averaged over augmented views; '-' before export."""
    value, tta = headline_score(status.get("val_metrics"))
    return "-" if value is None else f"{value:.3f}" + (" (TTA)" if tta else "")


def _accuracy(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
