"""Server frames checked against wsproto's client-side parser."""

from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Event, TextMessage

from protocol import Pong, close_frame, encode, ops_frame_payload, text_frame


def client_events(data: bytes) -> list[Event]:
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(data)
    return list(conn.events())


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000, 1_048_576])
def test_text_frame_lengths(size: int) -> None:
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    assert len(payload) == size
    frame = text_frame(payload)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)
    assert frame[0] == 0x81 and frame[1] & 0x80 == 0  # FIN + text, unmasked
    events = client_events(frame)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, TextMessage) and event.message_finished
    assert event.data == payload.decode()


def test_several_frames_in_one_write() -> None:
    payload = ops_frame_payload([b'{"v":1}', b'{"v":2}'])
    events = client_events(text_frame(payload) + text_frame(encode(Pong())))
    assert [e.data for e in events if isinstance(e, TextMessage)] == [payload.decode(), '{"type":"pong"}']


@pytest.mark.parametrize(
    "code, reason",
    [
        (1000, ""),
        (4400, "protocol violation"),
        (4413, "message too large"),
        (4408, "too slow to keep up"),
        (3000, "é"),
    ],
)
def test_close_frame(code: int, reason: str) -> None:
    events = client_events(close_frame(code, reason))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (code, reason)


def test_close_reason_is_cut_at_a_character_boundary() -> None:
    frame = close_frame(4400, "é" * 100)  # 200 bytes
    assert len(frame) == 2 + 2 + 122  # header, code, 61 whole characters
    event = client_events(frame)[0]
    assert isinstance(event, CloseConnection)
    assert event.reason == "é" * 61  # 122 bytes: the 62nd would split


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2000, 5000, -1])
def test_close_frame_refuses_unsendable_codes(code: int) -> None:
    with pytest.raises(ValueError):
        close_frame(code, "")
