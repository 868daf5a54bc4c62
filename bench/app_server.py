#!/usr/bin/env python3
"""A minimal RCML application server for the benchmark.

Answers every request (GET or POST) with the fixed RCML document of its path, over
HTTP/1.1 with keep-alive. It is asyncio rather than http.server because the edge's
pooled client keeps connections open and one thread per connection would cost this
2-core machine more CPU than the edge itself. It never caches anything for the edge:
the edge fetches voiceUrl (a POST with the call's parameters) on every call.

A document may name request parameters as `{{Name}}` (e.g. `{{ReferTarget}}` in a refer
application): those are filled in per request from the form-encoded body and query, as
a real application builds its RCML; documents without any are sent as stored.

usage: app_server.py PORT_FILE DOCUMENTS_JSON
  DOCUMENTS_JSON maps paths to documents ({"/p0": "<Response>...</Response>"}); unknown
  paths get 404. Binds 127.0.0.1 on a free port and writes the port to PORT_FILE once
  listening.
"""
import asyncio
import json
import re
import sys
import urllib.parse

PLACEHOLDER = re.compile(rb"\{\{([A-Za-z0-9]+)\}\}")


def reply(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def filled(document: bytes, query: bytes, body: bytes) -> bytes:
    """The document with each {{Name}} replaced by request parameter Name (XML-escaped;
    empty when absent)."""
    params = dict(urllib.parse.parse_qsl(query.decode("latin-1")))
    params.update(urllib.parse.parse_qsl(body.decode("latin-1")))
    escape = lambda v: v.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return PLACEHOLDER.sub(
        lambda m: escape(params.get(m.group(1).decode(), "")).encode(), document)


async def main(port_file: str, documents_file: str) -> None:
    with open(documents_file) as f:
        documents = {path.encode(): doc.encode() for path, doc in json.load(f).items()}
    responses = {path: reply(doc) for path, doc in documents.items()}
    templated = {path for path, doc in documents.items() if PLACEHOLDER.search(doc)}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or b"0")
                body = await reader.readexactly(length) if length else b""
                target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                path, _, query = target.partition(b"?")
                if path in templated:
                    writer.write(reply(filled(documents[path], query, body)))
                else:
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
