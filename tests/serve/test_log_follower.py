"""Following a log file while a child writes it: whole lines in order, tqdm redraws at their last state, a bounded tail."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.serve.log_follower import LogFollower, read_log_lines


def test_follows_a_file_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_bytes(b"")
    exited = threading.Event()
    seen: list[str] = []
    follower = LogFollower(path, exited.is_set, on_line=seen.append, tail_lines=3)
    follower.start()
    with path.open("ab") as log:
        for chunk in (
            b"first\nsec",
            b"ond\nLoading: 10%\rLoading: 100%\n",
            b"fourth\n",
            b"no newline at the end",
        ):
            log.write(chunk)
            log.flush()
            follower.catch_up()
    exited.set()
    follower.join(timeout=5)
    assert seen == ["first", "second", "Loading: 100%", "fourth", "no newline at the end"]
    assert follower.tail == ["Loading: 100%", "fourth", "no newline at the end"]


def test_a_failing_callback_does_not_stop_the_follower(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_text("one\ntwo\n", encoding="utf-8")

    def broken(line: str) -> None:
        raise RuntimeError(line)

    follower = LogFollower(path, lambda: True, on_line=broken)
    follower.start()
    follower.join(timeout=5)
    assert follower.tail == ["one", "two"]


def test_stop_ends_a_follower_whose_writer_still_runs(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_text("up\n", encoding="utf-8")
    follower = LogFollower(path, lambda: False)
    follower.start()
    follower.catch_up()
    follower.stop(timeout=5)
    assert follower.tail == ["up"]


def test_read_log_lines(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_bytes(b"a\n\xff bad byte\n")
    assert read_log_lines(path) == ["a", "\ufffd bad byte"]
    assert read_log_lines(tmp_path / "missing.log") is None


def test_read_log_lines_keeps_a_redrawn_line_at_its_last_state(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_bytes(b"a\nLoading: 1%\rLoading: 99%\nb\n")
    assert read_log_lines(path) == ["a", "Loading: 99%", "b"]
