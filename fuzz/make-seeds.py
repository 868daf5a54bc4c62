#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target from what the repository already has:
   python3 fuzz/make-seeds.py

- sip_message: the RFC 4475 / RFC 5118 torture messages (tests/data), every message the
  sipp scenarios send (tests/scenarios/*.xml, with sipp's [keywords] filled in as a run
  would), and a few TCP streams (two messages, CRLF keep-alives between them);
- refer_headers: the Refer-To / Referred-By values of those messages, of the edge's unit
  tests and docs/transfer.md, one "Refer-To\\nReferred-By" pair per file;
- rcml: examples/apps/*.xml, the XML blocks of docs/*.md, and the documents of the
  parser's unit tests (edge/src/rcml/document.rs).

Seeds are named `seed-<source>`; inputs found while fuzzing are kept beside them under the
names cargo-fuzz gave them (docs/fuzzing.md). Existing seed files are rewritten, nothing
else is touched.
"""

import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# sipp keywords as a test run fills them in (values of the test harness's kind).
SIPP = {
    "last_Via:": "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-edge-1;rport=5060;received=127.0.0.1",
    "last_From:": "From: \"Alice\" <sip:+15551230001@127.0.0.1>;tag=edge-a1",
    "last_To:": "To: <sip:bob@127.0.0.1:5071>",
    "last_Call-ID:": "Call-ID: sy-1-abc@127.0.0.1",
    "last_CSeq:": "CSeq: 1 INVITE",
    "$remote_contact": "sip:edge@127.0.0.1:5060;transport=udp",
    "$local_to": "<sip:bob@127.0.0.1:5071>",
    "$remote_from": "\"Alice\" <sip:+15551230001@127.0.0.1>;tag=edge-a1",
    "$target": "+15551230003",
    "$invite_cseq": "1",
    "$cseq_line": "1 INVITE",
    "branch": "z9hG4bK-1234-1-0",
    "call_id": "1-1234@127.0.0.1",
    "call_number": "1",
    "pid": "1234",
    "local_ip": "127.0.0.1",
    "local_ip_type": "4",
    "local_port": "5071",
    "media_ip": "127.0.0.1",
    "media_ip_type": "4",
    "media_port": "6000",
    "remote_ip": "127.0.0.1",
    "remote_port": "5060",
    "service": "+15551230002",
    "transport": "UDP",
    "next_url": "sip:edge@127.0.0.1:5060",
    "peer_tag_param": ";tag=edge-b1",
}


def write(target, name, data):
    path = CORPUS / target / f"seed-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def sipp_messages(path):
    """The messages a sipp scenario sends, as it would send them."""
    text = path.read_text(encoding="latin-1")
    for block in re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", text, re.S):

        def fill(match):
            key = match.group(1)
            if key.startswith("branch"):
                key = "branch"
            return SIPP.get(key, match.group(0))

        lines = [line.strip() for line in block.strip("\n").splitlines()]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            continue
        if "" in lines:
            split = lines.index("")
            head, body = lines[:split], lines[split + 1 :]
        else:
            head, body = lines, []
        head = [re.sub(r"\[([^\]\[]+)\]", fill, line) for line in head]
        body = "".join(re.sub(r"\[([^\]\[]+)\]", fill, line) + "\r\n" for line in body)
        head_text = "\r\n".join(head).replace("[len]", str(len(body.encode())))
        yield (head_text + "\r\n\r\n" + body).encode()


def sip_seeds():
    messages = []
    for folder in ("rfc4475", "rfc5118"):
        for path in sorted((ROOT / "tests" / "data" / folder).glob("*.dat")):
            write("sip_message", f"{folder}-{path.stem}", path.read_bytes())
            messages.append(path.read_bytes())
    seen = set()
    for path in sorted((ROOT / "tests" / "scenarios").glob("*.xml")):
        for n, message in enumerate(sipp_messages(path)):
            digest = hashlib.sha1(message).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            write("sip_message", f"sipp-{path.stem}-{n}", message)
            messages.append(message)
    # TCP streams: keep-alives, two messages back to back, a message cut short.
    invite = next(m for m in messages if m.startswith(b"INVITE sip:+1555"))
    refer = next(m for m in messages if m.startswith(b"REFER "))
    write("sip_message", "tcp-two-messages", b"\r\n\r\n" + invite + b"\r\n" + refer)
    write("sip_message", "tcp-cut-short", invite + refer[: len(refer) // 2])
    return messages


def refer_seeds(messages):
    pairs = set()
    for message in messages:
        head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        values = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("refer-to", "r", "referred-by", "b"):
                key = "to" if name.strip().lower() in ("refer-to", "r") else "by"
                values[key] = value.strip()
        if "to" in values:
            pairs.add((values["to"], values.get("by")))
    for value in [
        "<sip:+15551230002@edge.example;user=phone>",
        "sip:carol@h",
        '"Carol" <sips:carol@h>',
        "<tel:+15551230002>",
        "<nonsense>",
        "<http://evil.example/x>",
        "<mailto:bob@example.com>",
        "<sip:carol@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        "<sip:[2001:db8::1]>",
        "<sip:+15551230002@[2001:db8::1]:5070;transport=tcp>",
    ]:
        pairs.add((value, None))
    pairs.add(("<sip:carol@edge.example>", "<sip:bob@192.0.2.7>;tag=x"))
    pairs.add(("<sip:+15551230002@edge.example>", '"Bob & <co>" <sip:bob@b.example>'))
    for n, (to, by) in enumerate(sorted(pairs, key=str)):
        write("refer_headers", f"{n:02}", to if by is None else f"{to}\n{by}")


def rcml_seeds():
    for path in sorted((ROOT / "examples" / "apps").glob("*.xml")):
        write("rcml", f"example-{path.stem}", path.read_bytes())
    for path in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"```xml\n(.*?)```", path.read_text(), re.S)
        for n, block in enumerate(blocks):
            write("rcml", f"docs-{path.stem}-{n}", block)
    source = (ROOT / "edge" / "src" / "rcml" / "document.rs").read_text()
    literals = re.findall(r'r#"(.*?)"#', source, re.S) + re.findall(r'"((?:[^"\\]|\\.)*)"', source)
    seen = set()
    for literal in literals:
        if "<Response" not in literal or "{" in literal or literal in seen:
            continue
        seen.add(literal)
        if not literal.startswith("r#"):
            literal = literal.replace('\\"', '"').replace("\\n", "\n")
        write("rcml", f"unit-{len(seen):02}", literal)


if __name__ == "__main__":
    refer_seeds(sip_seeds())
    rcml_seeds()
    for target in sorted(p.name for p in CORPUS.iterdir()):
        print(target, len(list((CORPUS / target).iterdir())), "files")
