"""
The index's parse worker: a child process that reads and parses message files, so that
the daemon's own process spends none of its interpreter lock on MIME parsing.

Parsing a message's facts is pure-Python CPU work (about 0.35 ms for a 4 KB message).
In a thread of the daemon it holds the interpreter lock against the reactor, which then
waits for it on every socket call: under load that cost a fifth of the web-on intake.

Protocol (L{mailsink.index.parser.ProcessParser} is the other end): each line on stdin is a
JSON array of file paths; for each, one line goes to stdout: a JSON array with, per path,
C{null} when the file is gone or C{[size, mtime_ns, facts]} with facts as
L{mailsink.index.codec.facts_to_data} gives them. Output is ASCII JSON, so text that is not
valid Unicode (a lone surrogate) survives the trip. End of input ends the process.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import IO, Any

from mailsink.index.codec import facts_to_data
from mailsink.index.reading import read_head
from mailsink.message.mime import facts


def answer(paths: list[str]) -> list[Any]:
    """Per path: None if it cannot be read, else [size, mtime_ns, facts data]."""
    out: list[Any] = []
    for path in paths:
        found = read_head(path)
        if found is None:
            out.append(None)
            continue
        size, mtime_ns, head = found
        try:
            data = facts_to_data(facts(head))
        except Exception as error:  # one message must not end the worker's batch
            print(f"cannot parse {path!r}: {error!r}; indexed without its facts",
                  file=sys.stderr, flush=True)
            data = {}
        out.append([size, mtime_ns, data])
    return out


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer each request line until end of input."""
    for line in requests:
        paths = json.loads(line)
        answers.write(json.dumps(answer(paths), separators=(",", ":")).encode("ascii") + b"\n")
        answers.flush()


def main() -> None:
    # The daemon ends the worker by closing its input (or kills it). A stop of the whole
    # process group (systemctl stop, Ctrl-C in a terminal) is the daemon's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
