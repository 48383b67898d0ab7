"""Free TCP ports: a taken port is seen as taken, a picked one is free."""

from __future__ import annotations

import socket

from engine.serve.ports import pick_free_port, port_is_free


def test_port_checks() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", pick_free_port())
