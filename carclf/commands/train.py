"""``python -m carclf train --data DIR [--preset fast|quick|full] [--config FILE] [options] [--detach]``.

Builds a ``TrainConfig`` (preset <- config file <- these options), creates a run folder and trains in the
foreground with a progress bar, or in a detached background process with ``--detach``. The internal
``--run-dir DIR`` (re)starts an existing run folder: that is how ``start_run``/``resume_run`` launch it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

HELP = "Train a classifier on a folder of labelled photos (two-stage transfer learning)."

# Exit code when the run was stopped (SIGTERM) instead of finishing; errors exit with 2 (cli.py).
EXIT_STOPPED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from carclf.config import PRESETS

    parser.add_argument("--data", metavar="DIR", help="dataset folder: one sub-folder per class, or Kaggle train.csv + train/")
    parser.add_argument("--val-data", metavar="DIR",
                        help="separate validation folder (same classes); then all of --data is used for training")
    parser.add_argument("--config", metavar="FILE", help="training config YAML (keys of carclf.config.TrainConfig)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="base settings: fast (CPU, a head in about a minute), quick (CPU, minutes, fine-tuned; "
                             "the default) or full (GPU)")
    parser.add_argument("--backbone", metavar="NAME", help="backbone name (python -c 'import carclf; print(carclf.list_backbones())')")
    parser.add_argument("--img-size", type=int, metavar="N", help="input side in pixels (0 = backbone native)")
    parser.add_argument("--epochs", type=int, metavar="N", help="total epochs, shared by the stages in the preset's proportions")
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per training step")
    parser.add_argument("--name", help="run name (part of the run id and bundle name)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    parser.add_argument("--models-dir", metavar="DIR", help="where the trained bundle goes (default: models)")
    parser.add_argument("--detach", action="store_true", help="train in a background process and return at once")
    parser.add_argument("--no-fit", action="store_true",
                        help="do not adapt micro_batch_size to the memory limit (nor refuse a run that would not fit)")
    parser.add_argument("--run-dir", metavar="DIR", help=argparse.SUPPRESS)  # internal: (re)start an existing run


def build_config(args: argparse.Namespace):
    """The validated TrainConfig for these arguments."""
    from carclf.config import TrainConfig, load_config, with_total_epochs
    from carclf.errors import ConfigError

    overrides = {
        "data": args.data, "val_data": args.val_data, "backbone": args.backbone, "img_size": args.img_size,
        "batch_size": args.batch_size, "name": args.name, "models_dir": args.models_dir,
    }
    config = load_config(path=args.config, preset=args.preset, overrides=overrides)
    if not config.data:
        raise ConfigError("no dataset given: pass --data DIR (a folder with one sub-folder per class).")
    if not Path(config.data).is_dir():
        raise ConfigError(f"--data {config.data}: no such folder.")
    if config.val_data and not Path(config.val_data).is_dir():
        raise ConfigError(f"--val-data {config.val_data}: no such folder.")
    if args.epochs is not None:
        config = with_total_epochs(config, args.epochs)
    if args.name is None and config.name == TrainConfig.name:  # no name given anywhere: the dataset's name
        import dataclasses

        from carclf.data import dataset_name

        config = dataclasses.replace(config, name=dataset_name(config.data))
    from carclf.backbones import get_backbone

    get_backbone(config.backbone)  # an unknown name fails here, listing the valid ones, not in the run
    return config


def run(args: argparse.Namespace) -> int:
    from carclf import runs

    if args.run_dir:
        return _run_existing(Path(args.run_dir), args)
    config = build_config(args)
    if not args.no_fit:
        config = fit_to_memory(config)
    if args.detach:
        run_id = runs.start_run(config, args.runs_dir)
        print(run_id)
        print(f"training in the background; follow it with: python -m carclf runs show {run_id}")
        return 0
    from carclf.train import train

    paths = runs.create_run(config, args.runs_dir)
    with tee_output(paths.log):
        print(f"run {paths.run_id} in {paths.root}", flush=True)
        with runs.trainer_lock(paths):
            status = train(config, paths.root)
        if status.get("state") != runs.FINISHED:
            return EXIT_STOPPED
        metrics = status.get("val_metrics") or {}
        tta = f" ({metrics['tta']}-view TTA)" if "val_accuracy_tta" in metrics else ""
        print(f"finished: bundle {status.get('bundle')}, validation accuracy{tta} "
              f"{status.get('final_val_accuracy'):.3f}")
    return 0


class _Tee:
    """A text stream that writes to the terminal's stream and to a log file; the rest is the terminal's."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):  # isatty, encoding, fileno...: progress bars still see the terminal
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee_output(log_path: Path):
    """Also write what a run prints in the terminal to the run's log file, as a background run's is, so
    ``runs show`` and the dashboard's log tail have it (before, a terminal run showed "no log yet")."""
    with open(log_path, "a", encoding="utf-8", errors="replace", buffering=1) as log:  # line by line: tailed live
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(stdout, log), _Tee(stderr, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = stdout, stderr


def fit_to_memory(config):
    """``config`` planned against this machine's memory limit (carclf.memory_fit), printing the plan on one line."""
    from carclf.errors import ConfigError
    from carclf.memory_fit import plan_fit

    plan = plan_fit(config)
    if not plan.fits:
        raise ConfigError(f"this training does not fit in memory: {plan.message} (or pass --no-fit)")
    print(f"memory: {plan.message}", flush=True)
    return plan.config


def _run_existing(run_dir: Path, args: argparse.Namespace) -> int:
    """Train (or continue) the run in ``run_dir`` from its own config.yaml; other options are refused."""
    from carclf import runs
    from carclf.atomic import read_json_object
    from carclf.config import load_config
    from carclf.errors import RunError
    from carclf.train import train

    given = [name for name in ("data", "val_data", "config", "preset", "backbone", "img_size", "epochs", "batch_size", "name")
             if getattr(args, name) is not None]
    if given:
        raise RunError(f"--run-dir uses the run's own config.yaml; drop --{given[0].replace('_', '-')}.")
    paths = runs.RunPaths(run_dir)
    if not paths.config.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.yaml).")
    stored = read_json_object(paths.status)
    if stored.get("state") == runs.FINISHED or runs.is_imported(stored):
        raise RunError(f"{run_dir} is a finished or imported run: training it again would replace its model. "
                       "Start a new run instead.")
    with runs.trainer_lock(paths):  # a second process on the same run (double resume) is refused here
        status = train(load_config(paths.config), paths.root)
    return 0 if status.get("state") == runs.FINISHED else EXIT_STOPPED
