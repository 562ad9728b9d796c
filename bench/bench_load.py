"""Many visitors at once: prints one JSON object (and saves it, by default to bench/results/load.json).

Starts `streamlit run app.py` (empty models folder = the default model), warms it with one prediction, then
for 1, 4, 8 and 16 visitors opens one Debian chromium browser context per visitor on the Predict page and
uploads a different real car photo from ../shared/data in all of them at the same moment, with the page's
defaults (TTA 8 views + Grad-CAM). Per level it reports:
- verdict_median_s / verdict_slowest_s: upload -> the verdict is on screen
- done_median_s / done_slowest_s: upload -> the Grad-CAM overlay is on screen (the whole answer)
- errors: visitors who saw an exception or error box, or no answer within the timeout
- saw_queue_message: visitors who were shown their place in line while waiting
- server_cpu_s: CPU seconds the server tree used during the level (the rest of the wait is elsewhere:
  the browsers and other work on the machine)
- peak_tree_mb: the peak resident memory of the server's process tree during that level (sampled every
  0.2 s from /proc), and start_tree_mb before it

    python bench/bench_load.py [--levels 1 4 8 16] [--fresh-server] [--out bench/results/load.json]

CARCLF_MAX_CONCURRENT in the environment reaches the server (the number of heavy calls run at once).
bench/results/load.json was made with --fresh-server (each level on a new server, so what one level left
in memory does not count against the next); load_before.json (the code before the line) without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, streamlit_server  # noqa: E402
from carclf.machine import process_tree_pids, process_tree_rss  # noqa: E402

PHOTO_DIR = REPO_ROOT.parent / "shared" / "data" / "cars" / "sf_dl_car_classification_ostrebko"
DEFAULT_LEVELS = (1, 4, 8, 16)
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "load.json"
# Seconds one visitor may wait for the whole answer before it counts as an error.
TIMEOUT_S = 300
# Seconds between two memory samples of the server tree.
SAMPLE_S = 0.2
UPLOADER = '[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]'  # the Predict page's, not the sidebar's
VERDICT_TEXT = "Car score"  # the caption under every verdict (car or not)
DONE_TEXT = "Grad-CAM for"  # the overlay's caption: the last thing the page draws
QUEUE_TEXT = "ahead of you"  # carclf.ui.work_slot's message to a waiting visitor
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in process_tree_pids(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    return total


class MemorySampler:
    """Samples the server tree every SAMPLE_S seconds in a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int):
        self.pid = pid
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, process_tree_rss(self.pid))
            time.sleep(SAMPLE_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> int:
        """Start a new peak; returns the memory now."""
        now = process_tree_rss(self.pid)
        self._peak = now
        return now

    def peak(self) -> int:
        return max(self._peak, process_tree_rss(self.pid))


async def open_visitor(browser, url: str):
    """A fresh browser context on the Predict page, ready to upload."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    await page.goto(url, timeout=TIMEOUT_S * 1000)  # 16 pages loading at once on a busy machine are slow
    await page.locator(UPLOADER).wait_for(state="attached", timeout=TIMEOUT_S * 1000)
    return context, page


async def visit(page, photo: Path, start: asyncio.Event) -> dict:
    """Upload ``photo`` when ``start`` is set; times to verdict and to the whole answer, or the error."""
    await start.wait()
    began = time.monotonic()
    result = {"photo": photo.name, "error": None, "verdict_s": None, "done_s": None, "saw_queue_message": False}
    queue_seen = asyncio.create_task(_watch_queue_message(page))
    try:
        await page.locator(UPLOADER).set_input_files(str(photo))
        await page.get_by_text(VERDICT_TEXT).first.wait_for(timeout=TIMEOUT_S * 1000)
        result["verdict_s"] = round(time.monotonic() - began, 2)
        await page.get_by_text(DONE_TEXT).first.wait_for(timeout=TIMEOUT_S * 1000)
        result["done_s"] = round(time.monotonic() - began, 2)
        errors = await page.locator(ERROR_SELECTOR).all_inner_texts()
        if errors:
            result["error"] = " | ".join(text.strip()[:200] for text in errors)
    except Exception as error:  # a timeout or a closed page is what this benchmark counts
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    finally:
        queue_seen.cancel()
        result["saw_queue_message"] = bool(getattr(queue_seen, "seen", False))
    return result


async def _watch_queue_message(page) -> None:
    """Mark the current task when the queue message shows up (polled; it may vanish again quickly)."""
    task = asyncio.current_task()
    while True:
        try:
            if await page.get_by_text(QUEUE_TEXT).count():
                task.seen = True  # type: ignore[attr-defined]
                return
        except Exception:  # the page went away: nothing more to see
            return
        await asyncio.sleep(0.2)


async def run_level(browser, url: str, photos: list[Path], visitors: int, sampler: MemorySampler) -> dict:
    opened = await asyncio.gather(*(open_visitor(browser, url) for _ in range(visitors)))
    await asyncio.sleep(2)  # let the page runs triggered by opening finish
    start_bytes = sampler.reset()
    start_cpu = tree_cpu_s(sampler.pid)
    start = asyncio.Event()
    tasks = [asyncio.create_task(visit(page, photos[i % len(photos)], start)) for i, (_, page) in enumerate(opened)]
    start.set()
    results = await asyncio.gather(*tasks)
    peak = sampler.peak()
    server_cpu = tree_cpu_s(sampler.pid) - start_cpu
    for context, _ in opened:
        await context.close()
    verdicts = [r["verdict_s"] for r in results if r["verdict_s"] is not None]
    dones = [r["done_s"] for r in results if r["done_s"] is not None]
    return {
        "visitors": visitors,
        "verdict_median_s": round(statistics.median(verdicts), 2) if verdicts else None,
        "verdict_slowest_s": max(verdicts) if verdicts else None,
        "done_median_s": round(statistics.median(dones), 2) if dones else None,
        "done_slowest_s": max(dones) if dones else None,
        "errors": sum(r["error"] is not None for r in results),
        "error_messages": sorted({r["error"] for r in results if r["error"]}),
        "saw_queue_message": sum(r["saw_queue_message"] for r in results),
        "server_cpu_s": round(server_cpu, 1),
        "start_tree_mb": round(start_bytes / 2**20, 1),
        "peak_tree_mb": round(peak / 2**20, 1),
    }


async def bench(url: str, pid: int, levels: list[int], photos: list[Path]) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                                   env={**os.environ})
        try:
            with MemorySampler(pid) as sampler:
                idle = sampler.reset()
                warm = await run_level(browser, url, photos, 1, sampler)  # model build + first traces
                rows = []
                for visitors in levels:
                    rows.append(await run_level(browser, url, photos, visitors, sampler))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            await browser.close()
    return {"idle_tree_mb": round(idle / 2**20, 1), "warm_up": warm, "levels": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=list(DEFAULT_LEVELS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to save the JSON ('-' = nowhere)")
    parser.add_argument("--fresh-server", action="store_true",
                        help="one new server per level, so a level's memory does not include what earlier levels left")
    parser.add_argument("--note", default="", help="free text stored with the result (e.g. 'before the queue')")
    args = parser.parse_args()
    photos = sorted(PHOTO_DIR.glob("*/*.jpg"))[:: max(1, len(list(PHOTO_DIR.glob("*/*.jpg"))) // 16)][:16]
    with tempfile.TemporaryDirectory(prefix="carclf-bench-load-") as tmp:
        tmp = Path(tmp)
        for name in ("home", "models", "runs"):
            (tmp / name).mkdir()
        env = {"CARCLF_MODELS_DIR": str(tmp / "models"), "CARCLF_RUNS_DIR": str(tmp / "runs")}
        os.environ["HOME"] = str(tmp / "home")  # chromium writes into $HOME
        if args.fresh_server:
            runs = []
            for visitors in args.levels:
                with streamlit_server(tmp / "home", env, tmp / "server.log") as (url, process):
                    runs.append(asyncio.run(bench(url, process.pid, [visitors], photos)))
            result = {"idle_tree_mb": runs[0]["idle_tree_mb"], "warm_up": runs[0]["warm_up"],
                      "levels": [run["levels"][0] for run in runs], "fresh_server_per_level": True}
        else:
            with streamlit_server(tmp / "home", env, tmp / "server.log") as (url, process):
                result = asyncio.run(bench(url, process.pid, args.levels, photos))
    levels = {row["visitors"]: row for row in result["levels"]}
    lowest, highest = min(levels), max(levels)
    result.update({
        "growth_mb": round(levels[highest]["peak_tree_mb"] - levels[lowest]["peak_tree_mb"], 1),
        "max_concurrent": os.environ.get("CARCLF_MAX_CONCURRENT", "default"),
        "cpus": os.cpu_count(),
        "note": args.note or "default model, Predict page defaults (TTA 8 + Grad-CAM), CPU shared with other work",
    })
    text = json.dumps(result, indent=1)
    print(text)
    if str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
