"""The embedding cache: keyed by file content, so only new or edited photos cost a forward pass."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from carclf import embedding_cache
from carclf.embedding_cache import CACHE_DIRNAME, EmbeddingCache, default_cache_dir, embed_files, file_digest
from carclf.gate import DEFAULT_THRESHOLD


class CountingEmbedder:
    """The real embedder, counting the photos it is asked to run."""

    def __init__(self, model):
        self.model, self.photos = model, 0

    def predict_on_batch(self, batch):
        self.photos += len(batch)
        return self.model.predict_on_batch(batch)


@pytest.fixture(scope="module")
def model():
    return embedding_cache.build_embedder()


@pytest.fixture
def photos(shared_data, tmp_path):
    folder = tmp_path / "data" / "cars"
    folder.mkdir(parents=True)
    for source in sorted((shared_data / "cars/manzhura_ru_5models/qashqai").iterdir())[:4]:
        shutil.copy(source, folder / source.name)
    shutil.copy(shared_data / "noncars/caffe_cat.jpg", folder / "zz_cat.jpg")
    return sorted(folder.iterdir())


def test_second_run_computes_only_new_or_edited_photos(photos, model, tmp_path):
    cache = default_cache_dir(tmp_path / "data")
    assert cache == (tmp_path / "data" / CACHE_DIRNAME).resolve()
    counting = CountingEmbedder(model)
    first = embed_files(photos, cache, embedder=counting)
    assert counting.photos == first.computed == len(photos)
    assert first.ok.all() and first.features.shape == (len(photos), 1280)
    assert np.allclose(np.linalg.norm(first.features, axis=1), 1.0, atol=1e-3)
    cat = [p.name for p in photos].index("zz_cat.jpg")
    assert cat == len(photos) - 1
    assert first.car_scores[cat] < DEFAULT_THRESHOLD < first.car_scores[0]  # the gate's verdict, same pass

    renamed = photos[1].with_name("renamed.jpeg")
    photos[1].rename(renamed)
    photos[2].write_bytes(photos[3].read_bytes()[:-1000] + photos[2].read_bytes()[-1000:])  # edited bytes
    again = embed_files([photos[0], renamed, photos[2], photos[3], photos[4]], cache, embedder=counting)
    assert again.computed == 1 and counting.photos == len(photos) + 1  # only the edited photo
    assert np.array_equal(again.features[1], first.features[1])
    assert np.array_equal(again.features[0], first.features[0])


def test_unreadable_files_are_reported_not_fatal_and_cached(photos, model, tmp_path):
    broken = photos[0].with_name("broken.jpg")
    broken.write_bytes(photos[0].read_bytes()[:2000])
    counting = CountingEmbedder(model)
    result = embed_files([photos[1], broken], tmp_path / "cache", embedder=counting)
    assert result.ok.tolist() == [True, False]
    assert "broken.jpg" in result.errors[1] and not result.features[1].any()
    again = embed_files([photos[1], broken], tmp_path / "cache", embedder=counting)
    assert again.computed == 0 and again.errors == result.errors


def test_read_only_dataset_uses_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.setattr(embedding_cache.os, "access", lambda path, mode: False)
    folder = default_cache_dir(tmp_path / "shared")
    assert folder.is_relative_to(tmp_path / "home-cache" / "carclf" / "embeddings")
    assert folder != default_cache_dir(tmp_path / "other" / "shared")  # one per dataset, even with equal names


def test_a_damaged_cache_file_is_ignored(photos, tmp_path):
    cache = EmbeddingCache.open(tmp_path)
    cache.path.write_bytes(b"not a zip file")
    assert EmbeddingCache.open(tmp_path).records == {}
    assert file_digest(photos[0]) == file_digest(photos[0]) != file_digest(photos[1])


def test_a_pass_cut_short_keeps_the_photos_already_embedded(photos, model, tmp_path, monkeypatch):
    """A reloaded page or killed process mid-check must not throw away the batches already computed."""
    monkeypatch.setattr(embedding_cache, "CHECKPOINT_SECONDS", 0.0)
    cache = default_cache_dir(tmp_path / "data")

    def stop_after_two_batches(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_files(photos, cache, embedder=model, batch_size=2, progress=stop_after_two_batches)
    counting = CountingEmbedder(model)
    again = embed_files(photos, cache, embedder=counting, batch_size=2)
    assert again.computed == counting.photos == len(photos) - 4  # only the photos never embedded
