"""Output accumulation of one cell run: caps, coalescing, pacing, clear_output, terminal text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.kernels.outputs import CellOutput, OutputLimits
from engine.kernels.terminal import reduce_piece, render


def test_render_applies_carriage_return_and_backspace() -> None:
    assert render("abc\rX") == "Xbc"
    assert render("\r10%\r20%\r30%") == "30%"
    assert render("a\r\nb") == "a\nb"
    assert render("ab\x08c") == "ac"
    assert render("done\r") == "done\r"  # the cursor waits at column 0


def test_a_piece_keeps_what_reaches_back_into_committed_text() -> None:
    assert reduce_piece("\r10%\r20%", continuation=True) == "\r20%"
    assert reduce_piece("\x08x", continuation=True) == "\x08x"
    assert reduce_piece("plain\ntext", continuation=True) == "plain\ntext"


@given(st.text(alphabet="ab\r\n", max_size=16), st.text(alphabet="ab\r\n", max_size=16))
def test_reduced_pieces_render_like_the_raw_stream(committed: str, piece: str) -> None:
    assert render(committed + reduce_piece(piece, continuation=True)) == render(committed + piece)


def test_stream_text_is_coalesced_into_one_component() -> None:
    out = CellOutput("c", OutputLimits())
    for i in range(1000):
        out.stream("stdout", f"{i}\n")
    out.stream("stderr", "warn\n")
    comps = out.take(0.0)
    assert [c["t"] for c in comps] == ["stream_append", "stream_append"]
    assert comps[0]["text"] == "".join(f"{i}\n" for i in range(1000))
    assert not out.pending


def test_byte_cap_keeps_the_prefix_and_one_notice_says_how_much_was_dropped() -> None:
    out = CellOutput("c", OutputLimits(max_bytes=100, max_items=10))
    out.stream("stdout", "x" * 60)
    out.stream("stdout", "y" * 60)
    out.stream("stdout", "z" * 60)
    (comp,) = out.take(0.0)
    assert comp["text"] == "x" * 60 + "y" * 40
    notice = out.notice()
    assert notice is not None and "80 bytes" in notice["output"]["text"]


def test_item_cap_counts_outputs() -> None:
    out = CellOutput("c", OutputLimits(max_items=2))
    for i in range(5):
        out.output({"output_type": "display_data", "data": {"text/plain": str(i)}, "metadata": {}}, None)
    assert len(out.take(0.0)) == 2
    notice = out.notice()
    assert notice is not None and "in 3 outputs" in notice["output"]["text"]
    assert CellOutput("d", OutputLimits()).notice() is None


def test_clear_output_wait_clears_at_the_next_output_only() -> None:
    out = CellOutput("c", OutputLimits())
    out.stream("stdout", "old\n")
    out.clear_output(wait=True)
    assert [c["t"] for c in out.take(0.0)] == ["stream_append"]
    out.stream("stdout", "new\n")
    comps = out.take(0.0)
    assert [c["t"] for c in comps] == ["outputs_clear", "stream_append"] and comps[1]["text"] == "new\n"


def test_the_last_display_update_of_a_display_id_wins() -> None:
    out = CellOutput("c", OutputLimits())
    for i in range(3):
        out.update_display(
            "d1", {"output_type": "display_data", "data": {"text/plain": str(i)}, "metadata": {}}
        )
    (comp,) = out.take(0.0)
    assert comp["t"] == "display_update" and comp["output"]["data"] == {"text/plain": "2"}


def test_pace_first_output_at_once_then_at_most_rate_per_second_then_at_once_at_the_end() -> None:
    out = CellOutput("c", OutputLimits(rate=10))
    assert out.due_at() == float("inf")
    out.stream("stdout", "a")
    assert out.due_at() == -float("inf")
    out.take(100.0)
    out.stream("stdout", "b")
    assert out.due_at() == 100.1
    out.finished = True
    assert out.due_at() == -float("inf")
