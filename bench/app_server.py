#!/usr/bin/env python3
"""A minimal RCML application server for the benchmark.

Answers every request (GET or POST) with the fixed RCML document of its path, over
HTTP/1.1 with keep-alive. It is asyncio rather than http.server because the edge's
pooled client keeps connections open and one thread per connection would cost this
2-core machine more CPU than the edge itself. It never caches anything for the edge:
the edge fetches voiceUrl (a POST with the call's parameters) on every call.

usage: app_server.py PORT_FILE DOCUMENTS_JSON
  DOCUMENTS_JSON maps paths to documents ({"/p0": "<Response>...</Response>"}); unknown
  paths get 404. Binds 127.0.0.1 on a free port and writes the port to PORT_FILE once
  listening.
"""
import asyncio
import json
import sys


def reply(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def main(port_file: str, documents_file: str) -> None:
    with open(documents_file) as f:
        responses = {
            path.encode(): reply(doc.encode()) for path, doc in json.load(f).items()
        }

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or b"0")
                if length:
                    await reader.readexactly(length)
                target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                path = target.split(b"?", 1)[0]
                writer.write(responses.get(path, NOT_FOUND))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(port_file, "w") as f:
        f.write(f"{port}\n")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
