"""ShardedArrayDataset and ShardedArray: an array saved in shards reads like one array."""

import json

import numpy as np
import pytest
from kedro.io.core import DatasetError

from face_pipeline.datasets.array_files import ShardedArrayDataset
from face_pipeline.datasets.arrays import ArrayStream, ShardedArray


def numbered_rows(count: int, row_shape: tuple[int, ...] = (3, 2, 1)) -> np.ndarray:
    """Rows whose values tell them apart (consecutive values, modulo 251)."""
    return (np.arange(count * int(np.prod(row_shape))).reshape(count, *row_shape) % 251).astype(np.uint8)


@pytest.fixture
def saved(tmp_path) -> tuple[ShardedArrayDataset, np.ndarray]:
    array = numbered_rows(23)
    dataset = ShardedArrayDataset(filepath=str(tmp_path / "images"), shard_rows=5)
    dataset.save(array)
    return dataset, array


def test_a_split_over_several_shards_round_trips_memory_mapped(saved, tmp_path):
    dataset, array = saved
    loaded = dataset.load()
    assert dataset.exists()
    assert isinstance(loaded, ShardedArray)
    assert (len(loaded), loaded.shape, loaded.dtype, loaded.shard_count) == (23, array.shape, np.uint8, 5)
    assert all(isinstance(loaded.shard(number), np.memmap) for number in range(loaded.shard_count))
    np.testing.assert_array_equal(np.asarray(loaded), array)
    np.testing.assert_array_equal(np.stack(list(loaded)), array)
    index = json.loads((tmp_path / "images" / "index.json").read_text())
    assert [shard["rows"] for shard in index["shards"]] == [5, 5, 5, 5, 3]
    assert index["shape"] == [23, 3, 2, 1]
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [
        "index.json",
        *(f"shard-{number:05d}.npy" for number in range(5)),
    ]


@pytest.mark.parametrize(
    "indices",
    [
        [3, 4, 5, 6, 9, 10, 14, 15, 22],  # sorted, across every boundary
        [0, 4, 5, 9, 10, 14, 15, 19, 20],  # each shard's first and last row
        [22, 0, 7, 7, 13, 1],  # unsorted, with a repeat
        [-1, -23, 5],  # counted from the end
        [],
    ],
)
def test_gathering_indices_across_shard_boundaries_returns_the_right_rows(saved, indices):
    dataset, array = saved
    loaded = dataset.load()
    gathered = loaded[np.array(indices, dtype=np.int64)]
    assert type(gathered) is np.ndarray
    np.testing.assert_array_equal(gathered, array[np.array(indices, dtype=np.int64)])


def test_ints_slices_and_masks_index_like_numpy(saved):
    dataset, array = saved
    loaded = dataset.load()
    for row in (0, 4, 5, 22, -1, np.int64(12)):
        np.testing.assert_array_equal(loaded[row], array[row])
    for rows in (slice(3, 17), slice(None, 7), slice(18, None), slice(-6, -2), slice(10, 4), slice(1, 20, 3)):
        np.testing.assert_array_equal(np.asarray(loaded[rows]), array[rows])
        assert len(loaded[rows]) == len(array[rows])
    view = loaded[4:16]
    assert isinstance(view, ShardedArray) and view.shape == (12, 3, 2, 1)
    np.testing.assert_array_equal(view[np.array([0, 1, 6, 11])], array[4:16][[0, 1, 6, 11]])
    np.testing.assert_array_equal(loaded[7][..., 0], array[7][..., 0])
    np.testing.assert_array_equal(loaded[np.array([2, 8]), 1:, 0], array[[2, 8], 1:, 0])
    mask = np.arange(23) % 4 == 1
    np.testing.assert_array_equal(loaded[mask], array[mask])
    with pytest.raises(IndexError):
        loaded[23]
    with pytest.raises(IndexError):
        loaded[np.array([0, 23])]


def test_a_folder_without_index_is_refused(saved, tmp_path):
    dataset, _ = saved
    (tmp_path / "images" / "index.json").unlink()
    assert not dataset.exists()
    with pytest.raises(DatasetError, match=r"no index\.json.*did not finish"):
        dataset.load()


def test_a_truncated_shard_is_refused(saved, tmp_path):
    dataset, _ = saved
    shard = tmp_path / "images" / "shard-00002.npy"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(DatasetError, match=r"shard-00002\.npy: unreadable shard"):
        dataset.load()


def test_a_shard_that_disagrees_with_the_index_is_refused(saved, tmp_path):
    dataset, _ = saved
    np.save(tmp_path / "images" / "shard-00001.npy", numbered_rows(4))
    with pytest.raises(DatasetError, match=r"shard-00001.npy: shard of \(4, 3, 2, 1\).*index says \(5, 3, 2, 1\)"):
        dataset.load()


def test_a_save_that_fails_half_way_leaves_no_finished_array(saved):
    dataset, array = saved

    def chunks_then_failure():
        yield array[:5]
        raise RuntimeError("decoding failed")

    with pytest.raises(DatasetError, match="decoding failed"):
        dataset.save(chunks_then_failure())
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="no index"):
        dataset.load()


def test_a_stream_is_written_chunk_by_chunk_with_its_attrs_read_at_the_end(tmp_path):
    dataset = ShardedArrayDataset(filepath=str(tmp_path / "stream"))
    attrs: dict = {}
    written: list[int] = []

    def chunks():
        for start in range(0, 12, 4):
            # every earlier chunk is already a shard on disk when the next one is asked for
            written.append(len(list((tmp_path / "stream").glob("shard-*.npy"))))
            yield numbered_rows(12)[start : start + 4]
        attrs["produced"] = 3  # known only once the stream is exhausted

    dataset.save(ArrayStream(chunks(), attrs))
    loaded = dataset.load()
    assert written == [0, 1, 2]
    assert loaded.attrs == {"produced": 3}
    np.testing.assert_array_equal(np.asarray(loaded), numbered_rows(12))


def test_chunks_of_another_row_shape_are_refused(tmp_path):
    dataset = ShardedArrayDataset(filepath=str(tmp_path / "mixed"))
    with pytest.raises(DatasetError, match="chunk of shape"):
        dataset.save([numbered_rows(2), numbered_rows(2, (3, 3, 1))])
    assert not dataset.exists()


def test_a_remote_array_reads_each_shard_when_first_used():
    dataset = ShardedArrayDataset(filepath="memory://sharded-test/images", shard_rows=4)
    array = numbered_rows(10)
    dataset.save(array)
    loaded = dataset.load()
    assert loaded.shard_count == 3
    np.testing.assert_array_equal(loaded[np.array([1, 5, 9])], array[[1, 5, 9]])
    np.testing.assert_array_equal(np.asarray(loaded), array)
    assert not isinstance(loaded.shard(0), np.memmap)


def test_training_batches_from_shards_equal_those_from_one_array(saved):
    from face_pipeline.pipelines.training.data import make_dataset  # noqa: PLC0415 - TensorFlow only here

    dataset, array = saved
    targets = np.arange(len(array), dtype=np.float32)
    batches = [
        list(make_dataset(images, targets, 4, shuffle=True, seed=3).as_numpy_iterator())
        for images in (dataset.load(), array)
    ]
    assert len(batches[0]) == len(batches[1]) == 6
    for (x_sharded, y_sharded), (x_array, y_array) in zip(*batches, strict=True):
        np.testing.assert_array_equal(x_sharded, x_array)
        np.testing.assert_array_equal(y_sharded, y_array)
        np.testing.assert_array_equal(x_sharded, array[y_sharded.astype(int)])
