"""A bound on the request head for uvicorn's httptools protocol.

uvicorn's h11 protocol stops buffering a request head at `h11_max_incomplete_event_size`, but
its httptools protocol has no such limit: a client could send megabytes of headers (or never
end them) and the server would buffer them all before the app's 431 check ran. This subclass
counts the bytes of each request head (request line and headers, up to the blank line) as they
arrive and, past the limit, answers 431 and closes the connection without parsing further.
Without httptools, `serve` uses h11 with the same limit.
"""

from __future__ import annotations

import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)
_END = b"\r\n\r\n"


def rejection(limit: int) -> bytes:
    body = json.dumps({"detail": f"request headers exceed {limit} bytes"}).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class HeadLimitedHttpTools(HttpToolsProtocol):
    """HttpToolsProtocol that refuses a request head over `config.h11_max_incomplete_event_size`
    bytes with a 431 as soon as that many bytes have arrived."""

    _in_head = True
    _head_bytes = 0
    _tail = b""  # the last bytes of the previous chunk: the blank line may straddle two

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            window = self._tail + data
            end = window.find(_END)
            if end < 0:
                self._head_bytes += len(data)
                self._tail = window[-(len(_END) - 1) :]
            else:
                self._head_bytes += end + len(_END) - len(self._tail)
                self._in_head, self._tail = False, b""
            limit = self.config.h11_max_incomplete_event_size
            if limit is not None and self._head_bytes > limit:
                log.warning("request head over %d bytes: 431, connection closed", limit)
                self.transport.write(rejection(limit))
                self.transport.close()
                return
        super().data_received(data)

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        super().on_message_complete()
