import os

import pytest

from neuroflow.sdk.framing import FrameDecoder, FrameError, encode, read_frame
from neuroflow.v1 import worker_pb2 as wpb


def frame(n: int) -> bytes:
    return encode(wpb.ToWorker(invoke=wpb.InvokeRequest(id=n, input_json=b'"x"')))


def test_round_trip_byte_by_byte() -> None:
    data = frame(1) + frame(2) + frame(3)
    dec = FrameDecoder()
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i : i + 1])
    assert [wpb.ToWorker.FromString(b).invoke.id for b in got] == [1, 2, 3]
    assert dec.pending == 0


def test_length_is_big_endian_prefix() -> None:
    body = wpb.ToWorker(shutdown=wpb.Shutdown()).SerializeToString()
    assert encode(wpb.ToWorker(shutdown=wpb.Shutdown())) == len(body).to_bytes(4, "big") + body


def test_oversized_frame_fails_before_buffering() -> None:
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(FrameError, match="exceeds the limit of 100 bytes"):
        dec.feed(b"\x7f\xff\xff\xff" + b"garbage")


def test_empty_frame_is_a_valid_empty_message() -> None:
    assert FrameDecoder().feed(b"\x00\x00\x00\x00") == [b""]


def test_read_frame_from_fd_and_truncation() -> None:
    r, w = os.pipe()
    os.write(w, frame(7) + frame(8)[:6])
    os.close(w)
    assert wpb.ToWorker.FromString(read_frame(r) or b"").invoke.id == 7
    with pytest.raises(FrameError, match="stream ended"):
        read_frame(r)
    os.close(r)


def test_read_frame_clean_eof_is_none() -> None:
    r, w = os.pipe()
    os.close(w)
    assert read_frame(r) is None
    os.close(r)
