"""PreparedDataset: reproducible shuffles, resume, multi-process slices, padded eval."""

import numpy as np
import pytest

from mlctr.data import open_dataset
from mlctr.data.prepare import prepare


@pytest.fixture(scope="module")
def dataset(synthetic_criteo, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared"))
    prepare("synthetic", synthetic_criteo, out)
    return open_dataset(out)


def _row_ids(batches, dataset):
    """Map each batch row back to its train row through its (unique) id tuple."""
    ids, _ = dataset.arrays("train")
    lookup = {row.tobytes(): i for i, row in enumerate(np.asarray(ids))}
    return [[lookup[row.tobytes()] for row in batch["ids"]] for batch in batches]


def test_api_and_dtypes(dataset):
    assert dataset.num_fields == 39 == len(dataset.field_names)
    assert dataset.vocab_size == sum(f["vocab_size"] for f in dataset.feature_map["fields"])
    assert [dataset.num_examples(s) for s in ("train", "valid", "test")] == [2400, 300, 300]
    assert dataset.num_train_batches(64) == 37
    batch = next(dataset.train_batches(64, seed=0, epoch=0))
    assert batch["ids"].dtype == np.int32 and batch["ids"].shape == (64, 39)
    assert batch["label"].dtype == np.float32 and batch["label"].shape == (64,)
    assert set(np.unique(batch["label"])) <= {0.0, 1.0}
    assert 0 <= batch["ids"].min() and batch["ids"].max() < dataset.vocab_size


def test_train_order_reproducible_per_seed_and_epoch(dataset):
    def epoch(seed, number):
        return [b["ids"] for b in dataset.train_batches(128, seed=seed, epoch=number)]

    first = epoch(0, 0)
    assert len(first) == 18
    assert all(np.array_equal(a, b) for a, b in zip(first, epoch(0, 0)))
    assert not np.array_equal(first[0], epoch(0, 1)[0])
    assert not np.array_equal(first[0], epoch(1, 0)[0])


def test_start_batch_resumes_mid_epoch(dataset):
    full = list(dataset.train_batches(100, seed=3, epoch=2))
    resumed = list(dataset.train_batches(100, seed=3, epoch=2, start_batch=5))
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed):
        np.testing.assert_array_equal(a["ids"], b["ids"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert list(dataset.train_batches(100, seed=3, epoch=2, start_batch=len(full))) == []


def test_processes_cover_each_global_batch_exactly_once(dataset):
    single = _row_ids(dataset.train_batches(96, seed=5, epoch=1), dataset)
    per_process = [_row_ids(dataset.train_batches(96, seed=5, epoch=1, process_index=p,
                                                  process_count=4), dataset)
                   for p in range(4)]
    assert all(len(rows) == len(single) == 25 for rows in per_process)
    seen = []
    for b, global_rows in enumerate(single):
        parts = [per_process[p][b] for p in range(4)]
        assert all(len(part) == 24 for part in parts)
        assert sorted(sum(parts, [])) == sorted(global_rows)
        seen += global_rows
    assert len(seen) == len(set(seen)) == 25 * 96  # no row twice in an epoch
    with pytest.raises(ValueError):
        next(dataset.train_batches(100, seed=0, epoch=0, process_count=3))


@pytest.mark.parametrize("batch_size,process_count", [(128, 1), (128, 2), (100, 4), (1000, 2)])
def test_eval_batches_pad_and_mask_every_example_once(dataset, batch_size, process_count):
    ids, labels = dataset.arrays("valid")
    streams = [list(dataset.eval_batches("valid", batch_size, process_index=p,
                                         process_count=process_count))
               for p in range(process_count)]
    expected_batches = dataset.num_eval_batches("valid", batch_size)
    assert all(len(stream) == expected_batches for stream in streams)
    real_ids, real_labels = [], []
    for b in range(expected_batches):
        for p in range(process_count):
            batch = streams[p][b]
            assert batch["ids"].shape == (batch_size // process_count, 39)
            assert batch["mask"].dtype == np.float32
            real = batch["mask"] == 1
            assert (batch["mask"][~real] == 0).all() and (batch["label"][~real] == 0).all()
            # Padding only at the very end of the split.
            assert real.all() or not real[np.argmin(real):].any()
            real_ids.append(batch["ids"][real])
            real_labels.append(batch["label"][real])
    np.testing.assert_array_equal(np.concatenate(real_ids), ids)
    np.testing.assert_array_equal(np.concatenate(real_labels), labels.astype(np.float32))


def test_true_prob_only_for_synthetic(dataset, criteo_files, tmp_path):
    assert dataset.true_prob("test").shape == (300,)
    assert dataset.true_prob("test").dtype == np.float32
    prepare("criteo", criteo_files[0], str(tmp_path))
    real = open_dataset(str(tmp_path))
    assert real.true_prob("valid") is None and real.bayes is None
