"""The bus writer's ops frames are what `multiprocessing.connection.Connection.recv` reads."""

from __future__ import annotations

import os
import pickle
import struct
from multiprocessing.connection import Connection

from gatosd._bus_writer import _frame_header


def test_frames_are_read_by_connection_recv() -> None:
    r, w = os.pipe()
    reader = Connection(r, writable=False)
    try:
        frames = [[("pub", "t", {"i": i}, None, None, "U" * 26, "user:a", None)] for i in range(3)] + [None]
        for value in frames:
            data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            os.write(w, _frame_header(len(data)) + data)
        assert [reader.recv() for _ in frames] == frames
    finally:
        reader.close()
        os.close(w)


def test_frames_from_2_gib_take_the_long_length() -> None:
    assert _frame_header(0x7FFFFFFF) == struct.pack("!i", 0x7FFFFFFF)
    assert _frame_header(0x80000000) == struct.pack("!i", -1) + struct.pack("!Q", 0x80000000)
