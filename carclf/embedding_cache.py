"""Backbone features of every photo of a dataset, computed once and kept on disk, keyed by file content.

The data doctor (and anything else that needs per-photo features: the dataset map, later a kNN) reads
photos through ``embed_files``. Each file is identified by a hash of its bytes, so a renamed or moved
photo is not recomputed, an edited one is, and a second run over an unchanged dataset decodes nothing.
ONE forward pass of the gate's ImageNet classifier (EfficientNet-Lite0, offline weights) gives both the
pooled features (the 1280 values before its classifier) and the ImageNet probabilities, so the car gate's
verdict costs nothing extra.

The cache is a single ``.npz`` per (model, input size) in ``DIR/.carclf-cache/`` (a hidden folder, never
read as a class by ``carclf.data``), or, when the dataset folder is read-only, under the user's cache
folder (``$XDG_CACHE_HOME/carclf/embeddings/<hash of the folder path>/``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from carclf.atomic import atomic_output
from carclf.errors import ImageError
from carclf.gate import car_score
from carclf.images import load_image

LOG = logging.getLogger(__name__)

# The model whose features and ImageNet verdict are cached: the gate's own classifier, so not_a_car agrees
# with what Predict shows; Lite0 because its weights install offline and it is the fastest of the three.
EMBED_BACKBONE = "efficientnet_lite0"
# Its native input size (what the ImageNet head was trained at and what the gate sees).
EMBED_SIZE = 224
# The layer of carclf.backbones' ImageNet classifier holding the pooled features.
POOL_LAYER = "avg_pool"
# Photos per forward pass: inference only, so bigger than a training batch; small enough to stay flat in memory.
EMBED_BATCH = 32
# Threads decoding photos while the model runs (Pillow releases the GIL while decoding).
DECODE_THREADS = 2
# Folder inside a dataset holding its caches (hidden: scan_dataset skips it; add it to .gitignore).
CACHE_DIRNAME = ".carclf-cache"
# Bump when the stored arrays change meaning, so old caches are ignored instead of misread.
CACHE_VERSION = 1
# Side of the grayscale thumbnail kept per photo: near-duplicate pairs are verified on it (template
# matching tolerates crops, rescaling, recompression and brightness; 64 px keeps 4 KB per photo).
THUMB_SIZE = 64
# Key prefix of files that could not even be opened (never stored: they are retried next time).
UNREADABLE_KEY = "unreadable:"
# A long first embedding pass writes what it has this often (seconds), so a reload loses at most this much.
CHECKPOINT_SECONDS = 20.0
# Bytes read at a time while hashing files.
HASH_CHUNK = 1 << 20

EmbedProgress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while photos are embedded (only photos not found in the cache count)."""


def file_digest(path: Union[str, Path]) -> str:
    """A hex hash of a file's bytes: the cache key (the same photo under another name shares it)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir(dataset_root: Union[str, Path]) -> Path:
    """Where the caches of ``dataset_root`` live: inside it when writable, else in the user's cache folder."""
    root = Path(dataset_root).expanduser().resolve()
    inside = root / CACHE_DIRNAME
    if (inside.is_dir() and os.access(inside, os.W_OK)) or (not inside.exists() and os.access(root, os.W_OK)):
        return inside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.blake2b(str(root).encode("utf-8", "backslashreplace"), digest_size=8).hexdigest()
    return base / "carclf" / "embeddings" / f"{root.name}-{tag}"


@dataclass
class PhotoRecord:
    """What is kept per file content: features, gate score, pixel hash, size, or why it could not be read."""

    feature: Optional[np.ndarray]  # (D,) float32 pooled backbone features; None when unreadable
    car_score: float  # the gate's car score (0 when unreadable)
    imagenet_top: int  # most likely ImageNet class id (-1 when unreadable)
    imagenet_top_p: float
    pixel_hash: str  # hash of the decoded upright RGB pixels ("" when unreadable)
    width: int
    height: int
    thumb: Optional[np.ndarray] = None  # (THUMB_SIZE, THUMB_SIZE) uint8 grayscale, whole photo squashed
    error: str = ""  # why the photo could not be decoded ("" = fine)


@dataclass
class Embeddings:
    """``embed_files``' answer, aligned with the paths it was given."""

    paths: list[Path]
    features: np.ndarray  # (N, D) float32, L2-normalised; zero rows for unreadable photos
    car_scores: np.ndarray  # (N,)
    imagenet_top: np.ndarray  # (N,) int
    imagenet_top_p: np.ndarray  # (N,)
    pixel_hashes: list[str]
    sizes: np.ndarray  # (N, 2) width, height (0 when unreadable)
    errors: list[str]  # "" = readable
    thumbs: np.ndarray  # (N, THUMB_SIZE, THUMB_SIZE) uint8 grayscale
    digests: list[str]
    computed: int = 0  # photos decoded and run through the model this time (the rest came from the cache)
    seconds: float = 0.0
    cache: Optional["EmbeddingCache"] = None  # the store used (None = no cache): holds match_scores too

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: readable photos."""
        return np.array([not e for e in self.errors], dtype=bool)


@dataclass
class EmbeddingCache:
    """The on-disk store for one (model, input size): digest -> ``PhotoRecord``."""

    path: Path
    records: dict[str, PhotoRecord] = field(default_factory=dict)
    # Verdicts of slower pairwise checks, keyed by "digest|digest" (carclf.doctor_dupes' template matches).
    match_scores: dict[str, float] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def open(cls, cache_dir: Union[str, Path], backbone: str = EMBED_BACKBONE, size: int = EMBED_SIZE):
        """Load the cache file of ``backbone`` at ``size`` from ``cache_dir`` (empty when absent or stale)."""
        cache = cls(Path(cache_dir) / f"embeddings-{backbone}-{size}.npz")
        if cache.path.is_file():
            cache.records, cache.match_scores = _read_records(cache.path)
        return cache

    def get(self, digest: str) -> Optional[PhotoRecord]:
        return self.records.get(digest)

    def put(self, digest: str, record: PhotoRecord) -> None:
        self.records[digest] = record
        self.dirty = True

    def save(self, force: bool = False) -> None:
        """Write the whole store atomically (a crash mid-write leaves the previous file)."""
        if not (self.dirty or force):
            return
        digests = sorted(d for d in self.records if not d.startswith(UNREADABLE_KEY))
        records = [self.records[d] for d in digests]
        dim = next((r.feature.shape[0] for r in records if r.feature is not None), 0)
        features = np.zeros((len(records), dim), dtype=np.float16)
        thumbs = np.zeros((len(records), THUMB_SIZE, THUMB_SIZE), dtype=np.uint8)
        for row, record in enumerate(records):
            if record.feature is not None:
                features[row] = record.feature
                thumbs[row] = record.thumb
        arrays = {
            "version": np.array(CACHE_VERSION),
            "digests": np.array(digests, dtype="U32"),
            "features": features,
            "thumbs": thumbs,
            "car_scores": np.array([r.car_score for r in records], dtype=np.float32),
            "imagenet_top": np.array([r.imagenet_top for r in records], dtype=np.int16),
            "imagenet_top_p": np.array([r.imagenet_top_p for r in records], dtype=np.float32),
            "pixel_hashes": np.array([r.pixel_hash for r in records], dtype="U32"),
            "sizes": np.array([(r.width, r.height) for r in records], dtype=np.int32).reshape(-1, 2),
            "errors": np.array([r.error for r in records], dtype=str),
            "match_keys": np.array(sorted(self.match_scores), dtype=str),
            "match_values": np.array([self.match_scores[k] for k in sorted(self.match_scores)], dtype=np.float32),
        }
        try:
            with atomic_output(self.path) as temp:
                with open(temp, "wb") as handle:
                    np.savez(handle, **arrays)
        except OSError as error:  # only a cache: the answers stand, the next run recomputes
            LOG.warning("cannot write the embedding cache %s (%s); the next run will recompute", self.path,
                        error.strerror or error)
            return
        self.dirty = False


def _read_records(path: Path) -> tuple[dict[str, PhotoRecord], dict[str, float]]:
    """Records and pair scores of a cache file; a damaged or older-format file reads as empty (only a cache)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != CACHE_VERSION:
                return {}, {}
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}, {}
    records = {}
    for row, digest in enumerate(arrays["digests"]):
        error = str(arrays["errors"][row])
        records[str(digest)] = PhotoRecord(
            feature=None if error else arrays["features"][row].astype(np.float32),
            car_score=float(arrays["car_scores"][row]),
            imagenet_top=int(arrays["imagenet_top"][row]),
            imagenet_top_p=float(arrays["imagenet_top_p"][row]),
            pixel_hash=str(arrays["pixel_hashes"][row]),
            width=int(arrays["sizes"][row][0]),
            height=int(arrays["sizes"][row][1]),
            thumb=None if error else arrays["thumbs"][row],
            error=error,
        )
    matches = {str(k): float(v) for k, v in zip(arrays.get("match_keys", ()), arrays.get("match_values", ()))}
    return records, matches


def build_embedder(backbone: str = EMBED_BACKBONE):
    """The ImageNet classifier with two outputs: pooled features and the 1000 probabilities (one pass, both)."""
    if "tensorflow" not in sys.modules:  # keep TensorFlow's C++ start-up lines off the user's terminal
        from carclf.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
    import keras

    from carclf.backbones import build_imagenet_classifier

    classifier = build_imagenet_classifier(backbone)
    pooled = classifier.get_layer(POOL_LAYER).output
    return keras.Model(classifier.input, [pooled, classifier.output], name=f"{backbone}_embedder")


class LazyEmbedder:
    """``build_embedder`` deferred to the first batch: share one between several ``embed_files`` calls
    (a dataset and its ``--against`` folder) without building a model when everything is cached."""

    def __init__(self, backbone: str = EMBED_BACKBONE):
        self.backbone = backbone
        self.model = None

    def predict_on_batch(self, batch: np.ndarray):
        if self.model is None:
            self.model = build_embedder(self.backbone)
        return self.model.predict_on_batch(batch)


def _decode(path: Path, size: int) -> tuple:
    """(pixels at size x size, pixel hash, width, height, error, thumbnail) of one file, read once."""
    try:
        image = load_image(path)
    except ImageError as error:
        return None, "", 0, 0, str(error), None
    pixels = np.asarray(image, dtype=np.uint8)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.array(pixels.shape, dtype=np.int64).tobytes())
    digest.update(pixels.tobytes())
    from PIL import Image

    small = image.resize((size, size), Image.Resampling.BILINEAR)
    thumb = np.asarray(small.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR), np.uint8)
    return np.asarray(small, dtype=np.uint8), digest.hexdigest(), image.width, image.height, "", thumb


def embed_files(
    paths: Sequence[Union[str, Path]],
    cache_dir: Optional[Union[str, Path]] = None,
    progress: Optional[EmbedProgress] = None,
    backbone: str = EMBED_BACKBONE,
    size: int = EMBED_SIZE,
    embedder=None,
    batch_size: int = EMBED_BATCH,
) -> Embeddings:
    """Features, car scores, pixel hashes and sizes of ``paths``, from the cache where the bytes are known.

    ``cache_dir`` None = no cache (everything computed, nothing written). The model is built only when some
    photo is missing from the cache, so a second run over unchanged photos never loads TensorFlow's model.
    ``embedder`` lets a caller reuse a model from ``build_embedder`` (or a ``LazyEmbedder``) across calls.
    """
    started = time.perf_counter()
    paths = [Path(p) for p in paths]
    cache = EmbeddingCache.open(cache_dir, backbone, size) if cache_dir is not None else EmbeddingCache(Path())
    digests = []
    for path in paths:
        try:
            digests.append(file_digest(path))
        except OSError as error:
            digests.append(f"{UNREADABLE_KEY}{path}")
            cache.records[digests[-1]] = PhotoRecord(None, 0.0, -1, 0.0, "", 0, 0, error=f"{path.name}: cannot be "
                                                     f"read ({error.strerror or error}).")
    todo = sorted({d: p for d, p in zip(digests, paths) if cache.get(d) is None}.items())
    if todo:
        embedder = embedder or LazyEmbedder(backbone)
        _compute(todo, cache, embedder, size, batch_size, progress, checkpoint=cache_dir is not None)
        if cache_dir is not None:
            cache.save()
    elif progress is not None:
        progress(0, 0)
    return _assemble(paths, digests, cache, len(todo), time.perf_counter() - started,
                     cache if cache_dir is not None else None)


def _compute(todo, cache: EmbeddingCache, embedder, size: int, batch_size: int,
             progress: Optional[EmbedProgress], checkpoint: bool = False) -> None:
    """Decode (in threads) and run the model over the uncached files, batch by batch, filling ``cache``.

    ``checkpoint``: also write the cache every ``CHECKPOINT_SECONDS``, so a check cut short (a reloaded
    page, a killed process) keeps the photos it already embedded."""
    total, done = len(todo), 0
    last_saved = time.perf_counter()
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for start in range(0, total, batch_size):
            chunk = todo[start:start + batch_size]
            decoded = list(pool.map(lambda item: _decode(item[1], size), chunk))
            good = [i for i, d in enumerate(decoded) if d[0] is not None]
            if good:
                # Every batch of a call has the first one's shape (the last is padded): traced once.
                batch = np.zeros((min(batch_size, total), size, size, 3), dtype=np.float32)
                batch[:len(good)] = np.stack([decoded[i][0] for i in good])
                pooled, probs = embedder.predict_on_batch(batch)
                pooled = np.asarray(pooled, np.float32)[:len(good)]
                probs = np.asarray(probs, np.float64)[:len(good)]
                scores = car_score(probs)
            for i, ((digest, _), (_, pixel_hash, width, height, error, thumb)) in enumerate(zip(chunk, decoded)):
                if error:
                    cache.put(digest, PhotoRecord(None, 0.0, -1, 0.0, "", 0, 0, error=error))
                    continue
                row = good.index(i)
                top = int(np.argmax(probs[row]))
                # Stored precision from the start, so a first run and a cached run give the same answers.
                cache.put(digest, PhotoRecord(pooled[row].astype(np.float16).astype(np.float32),
                                              float(np.float32(scores[row])), top, float(np.float32(probs[row, top])),
                                              pixel_hash, width, height, thumb))
            done += len(chunk)
            if checkpoint and done < total and time.perf_counter() - last_saved > CHECKPOINT_SECONDS:
                cache.save()
                last_saved = time.perf_counter()
            if progress is not None:
                progress(done, total)


def _assemble(paths, digests, cache: EmbeddingCache, computed: int, seconds: float, kept) -> Embeddings:
    records = [cache.get(d) for d in digests]
    dim = next((r.feature.shape[0] for r in records if r.feature is not None), 1)
    features = np.zeros((len(records), dim), dtype=np.float32)
    thumbs = np.zeros((len(records), THUMB_SIZE, THUMB_SIZE), dtype=np.uint8)
    for row, record in enumerate(records):
        if record.feature is not None:
            thumbs[row] = record.thumb
            norm = float(np.linalg.norm(record.feature))
            features[row] = record.feature / norm if norm > 0 else record.feature
    return Embeddings(
        paths=list(paths),
        features=features,
        car_scores=np.array([r.car_score for r in records], dtype=np.float64),
        imagenet_top=np.array([r.imagenet_top for r in records], dtype=np.int64),
        imagenet_top_p=np.array([r.imagenet_top_p for r in records], dtype=np.float64),
        pixel_hashes=[r.pixel_hash for r in records],
        sizes=np.array([(r.width, r.height) for r in records], dtype=np.int64).reshape(-1, 2),
        errors=[r.error for r in records],
        thumbs=thumbs,
        digests=list(digests),
        computed=computed,
        seconds=seconds,
        cache=kept,
    )


__all__ = ["EMBED_BACKBONE", "EMBED_SIZE", "CACHE_DIRNAME", "Embeddings", "EmbeddingCache", "PhotoRecord",
           "LazyEmbedder",
           "build_embedder", "default_cache_dir", "embed_files", "file_digest"]
