"""The protocol helper of the locust scenarios (loadtest/locust/agora_proto.py): pure, no locust."""

from __future__ import annotations

import importlib.util
import struct
import sys
from types import ModuleType

from tests.server_process import ROOT


def _load() -> ModuleType:
    # The locust directory is a flat import path for locust, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location(
        "agora_proto", ROOT / "loadtest" / "locust" / "agora_proto.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("agora_proto", module)
    spec.loader.exec_module(module)
    return module


proto = _load()


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def test_frame_reader_splits_any_chunking() -> None:
    payloads = [b"x" * n for n in (0, 5, 125, 126, 300, 70_000)]
    stream = b"".join(frame(p) for p in payloads) + frame(struct.pack("!H", 1000), 0x8)
    for size in (1, 3, 7, 1000, len(stream)):
        reader = proto.FrameReader()
        got = []
        for i in range(0, len(stream), size):
            got += reader.feed(stream[i : i + size])
        assert got == [(0x1, p) for p in payloads] + [(0x8, struct.pack("!H", 1000))]


def test_sync_state_counts_gaps_and_resumes() -> None:
    s = proto.SyncState()
    s.welcome({"type": "welcome", "client": "c1", "version": 10, "notebook": {}})
    s.take_entries([{"v": 11}, {"v": 12}, {"v": 14}])
    assert (s.version, s.entries, s.gaps, s.welcome_version) == (14, 3, 1, 10)
    s.welcome({"type": "welcome", "client": "c1", "version": 16, "ops": [{"v": 15}, {"v": 16}]})
    assert (s.version, s.entries, s.gaps, s.welcome_version) == (16, 5, 1, 10)


def test_editor_one_op_in_flight_seq_and_base() -> None:
    ed = proto.EditorState()
    ed.sync.welcome({"type": "welcome", "client": "me", "version": 3, "notebook": {}})
    msg = ed.op_message([{"t": "cell_delete", "id": "a"}], 1)
    assert msg == b'{"type":"op","seq":1,"base":3,"op":[{"t":"cell_delete","id":"a"}]}'
    ed.sync.take_entries([{"v": 4, "client": "other", "seq": 9}])
    assert ed.acknowledged([{"v": 4, "client": "other", "seq": 9}]) is None
    assert ed.resend_message() == b'{"type":"op","seq":1,"base":4,"op":[{"t":"cell_delete","id":"a"}]}'
    ed.sync.take_entries([{"v": 5, "client": "me", "seq": 1}])
    done = ed.acknowledged([{"v": 5, "client": "me", "seq": 1}])
    assert done is not None and done.seq == 1 and ed.inflight is None
    assert b'"seq":2,"base":5' in ed.op_message([{"t": "cell_delete", "id": "a"}], 2)
    # A rejected op frees its seq (the server does not consume it).
    assert ed.rejected({"type": "reject", "seq": 2}) is not None
    assert b'"seq":2,' in ed.op_message([{"t": "cell_delete", "id": "b"}], 3)
    assert ed.take_ack({"type": "ack", "seq": 2, "v": 6}) is not None
    assert (ed.acked, ed.rejects) == (2, 1)


def test_text_ops_and_markers() -> None:
    assert proto.append_text("c", 0, "ab") == [{"t": "text", "id": "c", "ops": ["ab"]}]
    assert proto.append_text("c", 4, "ab") == [{"t": "text", "id": "c", "ops": [4, "ab"]}]
    assert proto.replace_text("c", 4, "ab") == [{"t": "text", "id": "c", "ops": [{"d": 4}, "ab"]}]
    payload = (
        b'{"type":"ops","ops":[{"op":[{"t":"text","id":"c","ops":["' + b"@T1000000000000000;x" + b'"]}]}]}'
    )
    assert proto.edit_latencies_ms(payload, 1_000_000_000_012_500) == [12.5]


def test_run_markers_in_outputs() -> None:
    code = proto.run_code("image", "r-1")
    assert "@Rr-1;" in code and proto.TINY_PNG_B64 in code
    assert proto.output_run_ids(
        {"t": "stream_append", "id": "c", "name": "stdout", "text": "@Rr-1;\n0 0\n"}
    ) == ["r-1"]
    display = {
        "output_type": "display_data",
        "data": {"image/png": "…", "text/plain": "@Rr-2;"},
        "metadata": {},
    }
    assert proto.output_run_ids({"t": "outputs_append", "id": "c", "output": display}) == ["r-2"]
    assert proto.output_run_ids({"t": "text", "id": "c", "ops": ["@Rr-3;"]}) == []


def test_run_programs_print_their_marker_first() -> None:
    import contextlib
    import io

    for kind in ("print", "loop", "image"):
        compile(proto.run_code(kind, "r-9"), "<cell>", "exec")
    for kind in ("print", "loop"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(proto.run_code(kind, "r-9"), {})
        assert out.getvalue().startswith("@Rr-9;\n")
