"""Element compression: ``compression`` = ``"AUTO"`` (zstd when it pays), ``"SNAPPY"``
(every message) or ``None``, as TensorFlow's ``COMPRESSION_*`` constants."""

from __future__ import annotations

import cramjam
import numpy as np
import pytest
import tensorwire as tw
from tensorwire import codec
from tensorwire_dataservice.service import worker as worker_module
from tensorwire_dataservice.service.elements import Compressor, decode_elements, encode_elements

service = tw.data.service
Dataset = tw.data.Dataset

COMPRESSIBLE = np.zeros((4, 100_000), np.float32)
NOISE = np.random.default_rng(1).random((4, 100_000)).astype(np.float32)


def _message(frames):
    """The element message as sent, before any decompression."""
    return codec.decode(list(frames))


@pytest.mark.parametrize("compression", ["AUTO", "SNAPPY", None])
def test_compression_roundtrip(service_factory, compression):
    dispatcher, _ = service_factory(1)
    for data in (COMPRESSIBLE, NOISE):
        ds = Dataset.from_tensor_slices(data).apply(
            service.distribute("parallel_epochs", dispatcher.target, compression=compression)
        )
        np.testing.assert_array_equal(np.stack(list(ds.as_numpy_iterator())), data)


def test_snappy_dataset_travels_snappy_compressed(service_factory, monkeypatch):
    sent: list[dict] = []

    def recording(elements, compressor=None, first=None):
        frames = encode_elements(elements, compressor, first)
        sent.append(_message(frames))
        return frames

    monkeypatch.setattr(worker_module, "encode_elements", recording)
    dispatcher, _ = service_factory(1)
    ds = Dataset.from_tensor_slices(NOISE).apply(
        service.distribute(
            "parallel_epochs", dispatcher.target, compression=service.COMPRESSION_SNAPPY
        )
    )
    np.testing.assert_array_equal(np.stack(list(ds.as_numpy_iterator())), NOISE)
    assert sent, "the worker sent no element message"
    assert all(set(message) == {"snappy"} for message in sent), [list(m) for m in sent]


def test_snappy_compresses_every_message_even_incompressible_ones():
    compressor = Compressor("SNAPPY")
    for elements in (
        [np.zeros(10_000, np.float32)],
        [np.random.default_rng(2).integers(0, 256, 40_000, dtype=np.uint8)],
        [np.int64(3)],
    ):
        frames = encode_elements(elements, compressor)
        message = _message(frames)
        assert set(message) == {"snappy"}
        inner = codec.loads(cramjam.snappy.decompress_raw(bytes(message["snappy"])))
        np.testing.assert_array_equal(inner["elements"][0], elements[0])
        got, eos = decode_elements(frames)
        assert not eos
        np.testing.assert_array_equal(got[0], elements[0])


def test_snappy_shrinks_compressible_messages():
    frames = encode_elements([np.zeros(100_000, np.float32)], Compressor("SNAPPY"))
    assert sum(len(memoryview(f).cast("B")) for f in frames) < 40_000


def test_no_compression_sends_elements_as_they_are():
    frames = encode_elements([np.zeros(10_000, np.float32)], Compressor(None))
    assert "elements" in _message(frames)


def test_auto_skips_incompressible_data():
    zeros = [np.zeros(10_000, np.float32)]
    noise = [np.random.default_rng(2).integers(0, 256, 40_000, dtype=np.uint8)]
    compressor = Compressor("AUTO")
    small = encode_elements(zeros, compressor)
    assert set(_message(small)) == {"zstd"}
    assert sum(len(memoryview(f).cast("B")) for f in small) < 5_000
    assert decode_elements(small)[0][0].tolist() == zeros[0].tolist()
    raw = encode_elements(noise, compressor)
    assert sum(len(memoryview(f).cast("B")) for f in raw) >= 40_000
    # after an incompressible message the next ones are not even tried
    assert compressor._skip > 0
    np.testing.assert_array_equal(decode_elements(raw)[0][0], noise[0])


# -- validation (TensorFlow's names and message) ------------------------------------------------


def test_constants_have_tensorflows_values():
    assert service.COMPRESSION_AUTO == "AUTO"
    assert service.COMPRESSION_NONE is None
    assert service.COMPRESSION_SNAPPY == "SNAPPY"
    assert tw.data.experimental.service.COMPRESSION_SNAPPY == "SNAPPY"


@pytest.mark.parametrize("compression", ["AUTO", "SNAPPY", None])
def test_distribute_accepts_every_compression_constant(compression):
    service.distribute("parallel_epochs", "grpc://localhost:5000", compression=compression)


@pytest.mark.parametrize("compression", ["snappy", "gzip", "ZSTD", ""])
def test_other_compressions_are_refused_with_tensorflows_message(compression):
    expected = (
        f"Invalid `compression` argument: {compression}. Must be one of ['AUTO', None, 'SNAPPY']."
    )
    with pytest.raises(ValueError) as distribute_error:
        service.distribute("parallel_epochs", "grpc://localhost:5000", compression=compression)
    assert str(distribute_error.value) == expected
    with pytest.raises(ValueError) as register_error:
        service.register_dataset("grpc://localhost:5000", Dataset.range(3), compression=compression)
    assert str(register_error.value) == expected


def test_an_unknown_mode_reaching_the_worker_is_an_error():
    with pytest.raises(tw.errors.InvalidArgumentError, match="'LZ4'"):
        Compressor("LZ4")
