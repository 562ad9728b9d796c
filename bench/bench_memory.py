"""Peak memory of app + training: carclf.memory_fit's estimate against a real measurement.

Starts a real ``streamlit run app.py`` server (``--browser``: with a headless chromium session open on it), then for
each config launches a real short training through the library (``runs.start_run``, the same call the Train
page makes) and samples every 0.2 s the RSS of the server's process tree and of the training process tree.
Last, with ``CARCLF_MEMORY_LIMIT`` (default 2.7G) it launches the Train page's default (the quick preset)
after ``memory_fit.plan_fit`` with the server's tree as reserved memory, as the dashboard does, and checks
that app + training stay under 2.5 GB. Prints JSON; ``--out`` also writes it (bench/results/memory.json).

    python bench/bench_memory.py --data DIR [--epochs 2] [--out bench/results/memory.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from carclf import machine, memory_fit, runs  # noqa: E402
from carclf.config import load_config, with_total_epochs  # noqa: E402

SAMPLE_S = 0.2  # sampling period of the RSS measurements
TARGET_S = 2.5e9  # app + training must stay under this with the 2.7 GB limit
# Configs measured: (label, preset overrides). Stages come from the quick preset unless overridden.
CONFIGS = [
    ("quick 288", {}),
    ("quick 224", {"img_size": 224}),
    ("quick 288 micro-batch 8", {"micro_batch_size": 8}),
    ("quick lite1 (240)", {"backbone": "efficientnet_lite1", "img_size": 0}),
    ("quick head-only 288", {"stages": [{"epochs": 30, "learning_rate": 0.001, "unfreeze": "none", "patience": 8}]}),
    ("quick lite2 (260) micro-batch 8", {"backbone": "efficientnet_lite2", "img_size": 0, "micro_batch_size": 8}),
    ("quick 224 micro-batch 4", {"img_size": 224, "micro_batch_size": 4}),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, CARCLF_RUNS_DIR=str(workdir / "runs"))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
            return server, port
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("streamlit server did not start")


def open_session(port: int, profile: Path) -> subprocess.Popen:
    """A headless Debian chromium showing the app, so the server runs a real session (app.py, sidebar, model)."""
    return subprocess.Popen(
        ["/usr/bin/chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", f"http://127.0.0.1:{port}/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(config, runs_dir: Path, server_pid: int) -> dict:
    """Launch ``config`` as the dashboard does and sample RSS until the training process ends."""
    run_id = runs.start_run(config, runs_dir)
    pid = runs.read_status(run_id, runs_dir)["pid"]
    peak_train = peak_sum = peak_server = 0
    started = time.time()
    while runs._pid_alive(pid):
        train_rss = machine.process_tree_rss(pid)
        server_rss = machine.process_tree_rss(server_pid)
        peak_train, peak_server = max(peak_train, train_rss), max(peak_server, server_rss)
        peak_sum = max(peak_sum, train_rss + server_rss)
        time.sleep(SAMPLE_S)
        runs.list_runs(runs_dir)  # reaps the finished child (runs.py keeps the launched processes)
    status = runs.read_status(run_id, runs_dir)
    return {"run_id": run_id, "state": status.get("state"), "error": status.get("error"),
            "seconds": round(time.time() - started, 1), "training_peak_bytes": peak_train,
            "server_peak_bytes": peak_server, "app_plus_training_peak_bytes": peak_sum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", default="2.7G")
    parser.add_argument("--only", nargs="*", help="labels of CONFIGS to measure (default: all)")
    parser.add_argument("--out")
    parser.add_argument("--browser", action="store_true", help="keep a headless chromium session open on the app")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    server, port = start_server(workdir)
    browser = open_session(port, workdir / "chromium") if args.browser else None
    try:
        time.sleep(45 if browser else 5)  # the session's first run imports TensorFlow and loads the default model
        idle = machine.process_tree_rss(server.pid)
        rows = []
        for label, overrides in CONFIGS:
            if args.only and label not in args.only:
                continue
            config = load_config(preset="quick", overrides={"data": str(Path(args.data).resolve()),
                                                             "models_dir": str(workdir / "models"), "name": "bench", **overrides})
            config = with_total_epochs(config, max(args.epochs, len(config.stages)))
            row = {"config": label, **measure(config, workdir / "runs", server.pid)}
            rows.append((row, config))
            print(json.dumps(row), file=sys.stderr, flush=True)
        # the dashboard's default launch with the container limit: quick preset after plan_fit
        os.environ[machine.MEMORY_LIMIT_ENV] = args.limit
        config = load_config(preset="quick", overrides={"data": str(Path(args.data).resolve()),
                                                         "models_dir": str(workdir / "models"), "name": "default"})
        config = with_total_epochs(config, max(args.epochs, len(config.stages)))
        reserved = machine.process_tree_rss(server.pid)
        plan = memory_fit.plan_fit(config, machine.memory_limit_bytes(), reserved)
        launch = {"limit": args.limit, "reserved_server_bytes": reserved, "plan": plan.message, "fits": plan.fits,
                  "changes": plan.changes, "estimate_bytes": plan.estimate_bytes,
                  **measure(plan.config, workdir / "runs", server.pid)}
        launch["under_2_5_GB"] = launch["app_plus_training_peak_bytes"] < TARGET_S
        importlib.reload(memory_fit)  # estimates by the module as it is now (it may be recalibrated meanwhile)
        for row, config in rows:
            row["estimate_bytes"] = memory_fit.estimate_peak_bytes(config)
            row["estimate_error"] = round(row["estimate_bytes"] / row["training_peak_bytes"] - 1, 3)
        rows = [row for row, _ in rows]
        result = {
            "what": "peak RSS sampled every 0.2 s: training process tree, and it plus a real `streamlit run app.py` "
                    "server tree" + (" with one headless chromium session open on the home page" if browser else
                                     " with no browser session") + "; trainings are launched through "
                    "carclf.runs.start_run (the Train page's call), not by clicking in a browser",
            "data": f"{args.data}: {sum(1 for _ in Path(args.data).rglob('*.jpg'))} photos", "epochs": args.epochs,
            "machine": machine.describe(), "server_idle_bytes": idle, "configs": rows, "default_launch_limited": launch,
            "within_20_percent": all(abs(row["estimate_error"]) <= 0.2 for row in rows),
        }
    finally:
        if browser:
            browser.kill()
            browser.wait()
        server.terminate()
        server.wait(timeout=30)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
