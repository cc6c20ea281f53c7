"""A resumed rank reads its checkpoint from a folder of its own when the checkpoint is remote."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs
from ray.train import Checkpoint

from linnaeus.train.loop import _local_folder


def test_local_checkpoints_are_read_in_place_and_remote_ones_from_a_private_copy_each(tmp_path):
    source = tmp_path / "checkpoint_000000010"
    source.mkdir()
    (source / "model.pt").write_bytes(b"weights")
    local = Checkpoint(str(source), filesystem=pyarrow.fs.LocalFileSystem())
    with _local_folder(local) as folder:
        assert Path(folder) == source
    remote = Checkpoint("checkpoint_000000010", filesystem=pyarrow.fs.SubTreeFileSystem(str(tmp_path),
                                                                                        pyarrow.fs.LocalFileSystem()))
    with _local_folder(remote) as first, _local_folder(remote) as second:
        assert first != second and Path(first) != source
        assert (Path(first) / "model.pt").read_bytes() == (Path(second) / "model.pt").read_bytes() == b"weights"
    assert not Path(first).exists() and not Path(second).exists()  # removed after use
