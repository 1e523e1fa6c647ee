"""TFRecord framing, checksums, compression, and the file readers."""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import Any

import pytest
from tensorwire import errors
from tensorwire_dataservice.dataset import (
    Dataset,
    TextLineDataset,
    TFRecordDataset,
    TFRecordOptions,
    TFRecordWriter,
    make_iterator,
    make_split_provider,
    masked_crc32c,
)
from tensorwire_dataservice.dataset import tfrecord as tfrecord_module


def bitwise_crc32c(data: bytes) -> int:
    """CRC-32C straight from its definition (reflected polynomial 0x82F63B78), bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def spec_masked(data: bytes) -> int:
    crc = bitwise_crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def spec_record(data: bytes) -> bytes:
    """One record framed as TensorFlow's record_writer.cc frames it."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", spec_masked(length))
        + data
        + struct.pack("<I", spec_masked(data))
    )


RECORDS = [b"", b"hello", bytes(range(256)) * 40]


def test_crc32c_check_value() -> None:
    # The standard check value of CRC-32C (RFC 3720 appendix B.4 family).
    assert bitwise_crc32c(b"123456789") == 0xE3069283
    assert tfrecord_module.crc32c(b"123456789") == 0xE3069283
    assert tfrecord_module._crc32c_py(b"123456789") == 0xE3069283


def test_masked_crc_matches_the_spec() -> None:
    for data in RECORDS:
        assert masked_crc32c(data) == spec_masked(data)


def test_writer_produces_tensorflows_bytes(tmp_path: Any) -> None:
    path = tmp_path / "w.tfrecord"
    with TFRecordWriter(str(path)) as w:
        for r in RECORDS:
            w.write(r)
    assert path.read_bytes() == b"".join(spec_record(r) for r in RECORDS)


def test_reader_reads_a_hand_built_file(tmp_path: Any) -> None:
    path = tmp_path / "fixture.tfrecord"
    path.write_bytes(b"".join(spec_record(r) for r in RECORDS))
    assert list(TFRecordDataset(str(path))) == RECORDS


def test_corrupt_data_checksum_is_data_loss(tmp_path: Any) -> None:
    raw = bytearray(spec_record(b"hello") + spec_record(b"world"))
    raw[12] ^= 0xFF  # first byte of the first record's data
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bytes(raw))
    with pytest.raises(errors.DataLossError, match="corrupted record at 0"):
        list(TFRecordDataset(str(path)))


def test_corrupt_length_checksum_is_data_loss(tmp_path: Any) -> None:
    raw = bytearray(spec_record(b"hello") + spec_record(b"world"))
    second = len(spec_record(b"hello"))
    raw[second + 9] ^= 0x01
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bytes(raw))
    it = iter(TFRecordDataset(str(path)))
    assert next(it) == b"hello"
    with pytest.raises(errors.DataLossError, match=f"corrupted record at {second}"):
        next(it)


def test_truncated_file_is_data_loss(tmp_path: Any) -> None:
    path = tmp_path / "short.tfrecord"
    path.write_bytes(spec_record(b"hello world")[:-3])
    with pytest.raises(errors.DataLossError, match="truncated"):
        list(TFRecordDataset(str(path)))


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_compressed_round_trip(tmp_path: Any, compression: str) -> None:
    path = str(tmp_path / f"c.{compression}")
    with TFRecordWriter(path, TFRecordOptions(compression_type=compression)) as w:
        for r in RECORDS:
            w.write(r)
    assert list(TFRecordDataset(path, compression_type=compression)) == RECORDS
    raw = open(path, "rb").read()
    plain = gzip.decompress(raw) if compression == "GZIP" else zlib.decompress(raw)
    assert plain == b"".join(spec_record(r) for r in RECORDS)


def test_compressed_file_written_by_another_tool(tmp_path: Any) -> None:
    path = tmp_path / "other.gz"
    path.write_bytes(gzip.compress(b"".join(spec_record(r) for r in RECORDS)))
    assert list(TFRecordDataset(str(path), compression_type="GZIP")) == RECORDS


def test_unknown_compression_is_refused(tmp_path: Any) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="compression_type"):
        TFRecordDataset(str(tmp_path / "x"), compression_type="LZ4")


def test_several_files_in_order_and_interleaved(tmp_path: Any) -> None:
    files = []
    for i in range(3):
        path = str(tmp_path / f"{i}.tfrecord")
        with TFRecordWriter(path) as w:
            for j in range(3):
                w.write(f"{i}{j}".encode())
        files.append(path)
    assert list(TFRecordDataset(files)) == [f"{i}{j}".encode() for i in range(3) for j in range(3)]
    interleaved = list(TFRecordDataset(files, num_parallel_reads=2))
    assert interleaved == [b"00", b"10", b"01", b"11", b"02", b"12", b"20", b"21", b"22"]


def test_reading_splits_interleaves_as_reading_the_list_does(tmp_path: Any) -> None:
    # Files of different lengths, so files close mid-round and others open in their place.
    files = []
    for i, length in enumerate([3, 1, 4, 2, 5]):
        path = str(tmp_path / f"{i}.tfrecord")
        with TFRecordWriter(path) as w:
            for j in range(length):
                w.write(f"{i}{j}".encode())
        files.append(path)
    for parallel in (None, 2, 3):
        ds = TFRecordDataset(files, num_parallel_reads=parallel)
        from_splits = list(make_iterator(ds, split_provider=make_split_provider(ds)))
        assert from_splits == list(ds), parallel
    # TensorFlow's order for these files (its interleave with cycle_length=2, block_length=1).
    assert b" ".join(TFRecordDataset(files, num_parallel_reads=2)) == (
        b"00 10 01 02 20 21 30 22 31 23 40 41 42 43 44"
    )


def test_reader_over_a_dataset_of_names(tmp_path: Any) -> None:
    for i in range(2):
        with TFRecordWriter(str(tmp_path / f"{i}.rec")) as w:
            w.write(str(i).encode())
    ds = TFRecordDataset(Dataset.list_files(str(tmp_path / "*.rec"), shuffle=False))
    assert list(ds) == [b"0", b"1"]
    with pytest.raises(TypeError, match="scalar `tf.string`"):
        TFRecordDataset(Dataset.range(3))


def test_missing_file_raises(tmp_path: Any) -> None:
    with pytest.raises(errors.NotFoundError, match="No such file"):
        list(TFRecordDataset(str(tmp_path / "nope")))


def test_writer_after_close_fails(tmp_path: Any) -> None:
    w = TFRecordWriter(str(tmp_path / "x"))
    w.close()
    with pytest.raises(errors.FailedPreconditionError):
        w.write(b"x")


def test_text_lines(tmp_path: Any) -> None:
    a = tmp_path / "a.txt"
    a.write_bytes(b"one\ntwo\r\n\nlast")
    b = tmp_path / "b.txt.gz"
    b.write_bytes(gzip.compress(b"x\ny\n"))
    assert list(TextLineDataset(str(a))) == [b"one", b"two", b"", b"last"]
    assert list(TextLineDataset([str(b)], compression_type="GZIP")) == [b"x", b"y"]
