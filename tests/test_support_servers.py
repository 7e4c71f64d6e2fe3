"""The throwaway servers the suite starts answer from their own process, never from another
one that took the port first (the suite runs in parallel, beside other projects' servers)."""

from __future__ import annotations

import pytest

from tests.support.redis_servers import RedisServer


def test_a_server_whose_port_was_taken_moves_to_a_free_one(redis_server: RedisServer) -> None:
    server = RedisServer()
    server.port = redis_server.port  # taken between choosing the port and starting
    try:
        server.start()
        assert server.port != redis_server.port
        assert server.proc is not None
        with server.client() as client:
            assert int(client.info("server")["process_id"]) == server.proc.pid
    finally:
        server.cleanup()


def test_a_port_the_caller_chose_is_kept_or_the_start_fails(redis_server: RedisServer) -> None:
    server = RedisServer(port=redis_server.port)
    try:
        with pytest.raises(Exception, match="another process holds port"):
            server.start()
    finally:
        server.cleanup()
