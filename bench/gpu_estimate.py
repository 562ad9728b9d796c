"""GPU numbers on paper: the ``full`` preset on the Kaggle data, on a T4 and a P100; prints one JSON object.

    python bench/gpu_estimate.py [--out bench/results/gpu_estimate.json] [--images 640] [--no-pipeline]

1. FLOPs per photo of the full preset's model, counted by TensorFlow's profiler on the Keras model (forward
   pass); per layer (conv, depthwise, dense multiply-adds) to split each stage's backward pass by what the
   stage trains (a head-only stage back-propagates through the head only; "all" through the whole backbone,
   about 3x the forward pass).
2. Time per epoch and for the whole schedule (the preset's epochs, before early stopping) on each card: its
   published peak times a utilisation factor measured for EfficientNets (``REFERENCE``), capped by memory
   bandwidth (depthwise convolutions are memory-bound). Paper numbers: about +-30 %; no GPU measured them.
3. The photos/s the input pipeline must deliver (the head-only stage is the hungriest), against the photos/s
   per CPU core of carclf's training pipeline measured here (``taskset`` 1 core vs 2, the full preset's
   augmentation at its image size, no decoded-photo cache: on 13k photos almost every photo is decoded every
   epoch) -> how many cores keep each GPU fed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared" / "data"
# Genuine competition photos (Avito ads, 640x4xx JPEG): what the Kaggle pipeline decodes.
KAGGLE_PHOTOS_DIR = SHARED / "cars" / "sf_dl_car_classification_ostrebko"
KAGGLE_TRAIN_CSV = SHARED / "sf_meta" / "train.csv"  # the competition's train.csv: one row per training photo
PRESET = "full"
NUM_CLASSES = 10

# Published peak throughput, TFLOPS, and memory bandwidth, GB/s (NVIDIA data sheets). The T4's fp16 figure
# is its tensor cores'; the P100 (Pascal) has none: fp16 there is packed math at twice the fp32 rate.
GPUS = {
    "T4": {"fp16_tflops": 65.0, "fp32_tflops": 8.1, "memory_gb_s": 320.0, "tensor_cores": True},
    "P100": {"fp16_tflops": 18.7, "fp32_tflops": 9.3, "memory_gb_s": 732.0, "tensor_cores": False},
}
# Measured EfficientNet training on one GPU: NVIDIA DeepLearningExamples, TensorFlow2/Classification/ConvNets/
# efficientnet_v1 README, EfficientNet-B4 at 380 px on one V100 (DGX-1): 79 photos/s FP32, 211 with mixed
# precision. B4's forward pass is 4.2 G multiply-adds (EfficientNet paper) = 8.4 GFLOPs, training ~3x.
REFERENCE = {"card": "V100", "model": "EfficientNet-B4 380 px", "train_gflops_per_photo": 3 * 8.4,
             "fp32_photos_per_s": 79.0, "mixed_photos_per_s": 211.0,
             "fp32_peak_tflops": 15.7, "tensor_peak_tflops": 125.0, "memory_gb_s": 900.0}


def reference_rates() -> dict:
    """Effective TFLOPS of the reference run, and the share of its card's peak they are."""
    r = REFERENCE
    fp32 = r["fp32_photos_per_s"] * r["train_gflops_per_photo"] / 1000
    mixed = r["mixed_photos_per_s"] * r["train_gflops_per_photo"] / 1000
    return {"fp32_tflops": fp32, "mixed_tflops": mixed, "fp32_utilisation": fp32 / r["fp32_peak_tflops"],
            "tensor_utilisation": mixed / r["tensor_peak_tflops"]}


def effective_tflops(card: dict, mixed: bool) -> dict:
    """What a card sustains on EfficientNet training: min(peak x utilisation, reference x bandwidth ratio)."""
    ref = reference_rates()
    bandwidth_ratio = card["memory_gb_s"] / REFERENCE["memory_gb_s"]
    if not mixed:
        compute, memory = card["fp32_tflops"] * ref["fp32_utilisation"], ref["fp32_tflops"] * bandwidth_ratio
    elif card["tensor_cores"]:
        compute, memory = card["fp16_tflops"] * ref["tensor_utilisation"], ref["mixed_tflops"] * bandwidth_ratio
    else:  # packed fp16 without tensor cores: the fp32 kernels' utilisation at twice the rate
        compute, memory = card["fp16_tflops"] * ref["fp32_utilisation"], ref["mixed_tflops"] * bandwidth_ratio
    return {"compute_bound_tflops": round(compute, 2), "memory_bound_tflops": round(memory, 2),
            "tflops": round(min(compute, memory), 2), "limited_by": "compute" if compute <= memory else "memory"}


def model_flops(config) -> dict:
    """Forward FLOPs per photo (TF profiler) and, per stage, the training FLOPs per photo."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from carclf.model import BACKBONE_NAME, HEAD_NAME, build_classifier, set_trainable

    model = build_classifier(config, NUM_CLASSES, weights=None)  # the weights do not change the FLOPs
    size = config.img_size

    @tf.function(autograph=False)
    def forward(x):
        return model(x, training=False)

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function(tf.TensorSpec([1, size, size, 3])))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    total = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                          options=options).total_float_ops
    backbone = [(layer, _layer_flops(layer)) for layer in model.get_layer(BACKBONE_NAME).layers]
    head = sum(_layer_flops(layer) for layer in model.get_layer(HEAD_NAME).layers)
    counted = sum(flops for _, flops in backbone) + head
    stages = []
    for number, stage in enumerate(config.stages, start=1):
        trained = set_trainable(model, stage.unfreeze)
        backward = 2 * head  # the head always trains: gradients of its inputs and of its weights
        if trained:
            first = next(i for i, (layer, _) in enumerate(backbone) if layer.trainable and layer.weights)
            # above the first trained layer every layer passes gradients down (1x); trained ones also get
            # their weight gradients (another 1x); below it nothing is computed
            backward += sum(flops * (2 if layer.trainable else 1) for layer, flops in backbone[first:])
        train = total + backward
        stages.append({"stage": number, "unfreeze": stage.unfreeze, "epochs": stage.epochs,
                       "trainable_backbone_layers": trained, "train_gflops_per_photo": round(train / 1e9, 3),
                       "train_to_forward": round(train / total, 2)})
    return {"img_size": size, "parameters": int(model.count_params()),
            "forward_gflops_per_photo": round(total / 1e9, 3), "conv_dense_share_of_profiled": round(counted / total, 3),
            "stages": stages}


def _layer_flops(layer) -> int:
    """2 x multiply-adds of a convolution, depthwise convolution or dense layer (0 for anything else)."""
    import keras

    if not layer.weights or not hasattr(layer, "output"):
        return 0
    out = layer.output.shape
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * out[1] * out[2] * out[3] * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return 2 * out[1] * out[2] * out[3] * kh * kw * layer.input.shape[-1] // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.input.shape[-1] * out[-1]
    return 0


def kaggle_split(config) -> dict:
    """Training and validation photos of the Kaggle data under the preset's val_fraction."""
    total = sum(1 for _ in open(KAGGLE_TRAIN_CSV, encoding="utf-8")) - 1 if KAGGLE_TRAIN_CSV.is_file() else 15_561
    val = round(total * config.val_fraction)
    return {"photos": total, "train": total - val, "val": val}


def schedule(flops: dict, split: dict, config, card: dict) -> dict:
    """Seconds per epoch of each stage, the photos/s the GPU eats, and the whole run's hours."""
    mixed = True  # carclf's mixed_precision "auto": on with any GPU (carclf.devices)
    rate = effective_tflops(card, mixed)
    tflops = rate["tflops"] * 1e12
    forward = flops["forward_gflops_per_photo"] * 1e9
    val_s = split["val"] * forward / tflops
    stages, total_s = [], 0.0
    for stage in flops["stages"]:
        train_s = split["train"] * stage["train_gflops_per_photo"] * 1e9 / tflops
        epoch_s = train_s + val_s
        total_s += epoch_s * stage["epochs"]
        stages.append({"stage": stage["stage"], "epochs": stage["epochs"], "epoch_s": round(epoch_s, 1),
                       "train_photos_per_s": round(split["train"] / train_s)})
    final_s = split["val"] * forward * (1 + config.tta) / tflops  # the final evaluation, plain and TTA views
    total_s += final_s
    return {"mixed_precision": mixed, **rate, "stages": stages, "final_evaluation_s": round(final_s, 1),
            "total_hours": round(total_s / 3600, 2), "epochs": sum(s["epochs"] for s in stages),
            "pipeline_photos_per_s_needed": max(s["train_photos_per_s"] for s in stages)}


# Pipeline runs: name -> (CPUs it is pinned to, decoded-photo cache on). "cached" shows what decoding costs.
PIPELINE_RUNS = {"cores_1": ("0", False), "cores_2": ("0,1", False), "cores_1_cached": ("0", True)}


def fed_by(card: dict, split: dict, pipeline: dict, cores: int) -> None:
    """Add to ``card``: the CPU cores each stage needs to keep the GPU busy, and the run's hours when only
    ``cores`` cores feed it (an epoch then lasts as long as the slower of GPU and pipeline)."""
    per_core, per_core_cached = pipeline["photos_per_s_per_core"], pipeline["photos_per_s_per_core_cached"]
    total_s = card["final_evaluation_s"]
    for stage in card["stages"]:
        needed = stage["train_photos_per_s"]
        stage["cpu_cores_to_feed"] = math.ceil(needed / per_core)
        stage["cpu_cores_to_feed_cached"] = math.ceil(needed / per_core_cached)
        gpu_s = split["train"] / needed
        val_s = stage["epoch_s"] - gpu_s  # validation photos are few and stay decoded in memory: GPU-bound
        stage[f"epoch_s_with_{cores}_cores"] = round(max(gpu_s, split["train"] / (cores * per_core)) + val_s, 1)
        total_s += stage[f"epoch_s_with_{cores}_cores"] * stage["epochs"]
    card["cpu_cores_to_feed"] = max(stage["cpu_cores_to_feed"] for stage in card["stages"])
    card[f"total_hours_with_{cores}_cores"] = round(total_s / 3600, 2)


def measure_pipeline(images: int) -> dict:
    """Photos/s of the training pipeline pinned to 1 core and to 2 cores (separate processes: tf.data sizes
    its thread pools from the CPUs it may use), and its CPU time per photo.

    On a shared machine the wall-clock rates say as much about the neighbours as about the pipeline; the
    CPU milliseconds per photo (all threads) do not, so photos/s per core is 1000 / those.
    """
    results = {"load_average_1min_before": round(os.getloadavg()[0], 2)}
    for name, (cores, cached) in PIPELINE_RUNS.items():
        command = ["taskset", "-c", cores, sys.executable, __file__, "--pipeline-child", "--images", str(images)]
        done = subprocess.run(command + (["--cache"] if cached else []), capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    results["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    cpu_ms = min(results[name]["cpu_ms_per_photo"] for name in ("cores_1", "cores_2"))
    results["photos_per_s_per_core"] = round(1000 / cpu_ms, 1)
    results["photos_per_s_per_core_cached"] = round(1000 / results["cores_1_cached"]["cpu_ms_per_photo"], 1)
    results["two_core_wall_scaling"] = round(results["cores_2"]["photos_per_s"] / results["cores_1"]["photos_per_s"], 2)
    return results


def pipeline_child(images: int, cached: bool) -> None:
    """One process: time carclf's training dataset of the full preset over real competition photos."""
    import carclf.pipeline as pipeline
    from carclf.augment import load_aug_config
    from carclf.config import load_config
    from carclf.images import is_image_file
    from carclf.model import resolve_img_size

    config = load_config(preset=PRESET)
    size = resolve_img_size(config)
    photos = sorted(p for p in KAGGLE_PHOTOS_DIR.rglob("*") if p.is_file() and is_image_file(p))
    paths = [photos[i % len(photos)] for i in range(images)]
    if not cached:
        pipeline.MAX_CACHE_BYTES = 0  # decode every photo every time, as for most of 13k photos per epoch
    dataset = pipeline.make_dataset(paths, [i % NUM_CLASSES for i in range(images)], size, config.batch_size,
                                    augment=load_aug_config(config.augmentation), seed=0)
    for _ in dataset.take(2):  # warm-up: thread pools, OS file cache
        pass
    rates = []
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        seen = sum(int(batch[0].shape[0]) for batch in dataset)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        rates.append((seen / wall, 1000 * cpu / seen))
    best = max(rates)  # a shared machine only ever slows a run down: the fastest epoch is the truest
    print(json.dumps({"cpus_allowed": len(os.sched_getaffinity(0)), "decoded_cache": cached, "img_size": size,
                      "batch": config.batch_size,
                      "augmentation": config.augmentation, "images_per_epoch": images,
                      "photos_per_s": round(best[0], 1), "cpu_ms_per_photo": round(best[1], 2),
                      "photos_per_s_each_epoch": [round(rate, 1) for rate, _ in rates]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--images", type=int, default=640, help="photos per timed pipeline epoch")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the CPU pipeline measurement")
    parser.add_argument("--reuse-pipeline", type=Path, metavar="JSON",
                        help="take the pipeline measurement from an earlier result file instead of measuring")
    parser.add_argument("--cores", type=int, default=4, help="CPU cores assumed feeding the GPU (default 4)")
    parser.add_argument("--pipeline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_child:
        pipeline_child(args.images, args.cache)
        return

    import tensorflow as tf

    from carclf.config import load_config
    from carclf.model import resolve_img_size

    config = load_config(preset=PRESET)
    config = config.replace(img_size=resolve_img_size(config))
    flops = model_flops(config)
    split = kaggle_split(config)
    result = {
        "preset": PRESET, "backbone": config.backbone, "batch_size": config.batch_size, "kaggle": split,
        "model": flops, "reference": {**REFERENCE, **{k: round(v, 3) for k, v in reference_rates().items()}},
        "gpus": {name: {**card, **schedule(flops, split, config, card)} for name, card in GPUS.items()},
        "tensorflow": tf.__version__, "cpu_count": os.cpu_count(),
    }
    if args.reuse_pipeline:
        result["pipeline"] = json.loads(args.reuse_pipeline.read_text(encoding="utf-8"))["pipeline"]
    elif not args.no_pipeline:
        result["pipeline"] = measure_pipeline(args.images)
    if "pipeline" in result:
        for card in result["gpus"].values():
            fed_by(card, split, result["pipeline"], args.cores)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
