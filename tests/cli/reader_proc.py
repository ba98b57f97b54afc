"""A reader process for the registry tests, optionally as another user.

``python -m tests.cli.reader_proc [--user UID:GID[:GROUP,...]] ACTION ...``

* ``register SHM FEED STREAM NAME``: register, print ``{"registered": bool, "pid": N, "listed": N}``
  (``listed``: entries this user can see), then, if registered, report position 7 and 1 loss and
  sleep until killed.
* ``hammer SHM FEED STREAM SECONDS``: register and report positions 1, 2, 3, ... (lost = position)
  as fast as it can for SECONDS or until SIGTERM, then leave.
* ``mdtail ARGS...``: run mdtail.

``--user`` drops root privileges first (after every import: the interpreter may live where the
other user cannot read), to play a user with other permissions than the test's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from consolidator.cli import mdtail
from consolidator.ring.registry import list_readers, register_reader


def _become(spec: str) -> None:
    uid, gid, *rest = spec.split(":")
    groups = [int(g) for g in rest[0].split(",")] if rest and rest[0] else []
    os.setgroups(groups)
    os.setresgid(int(gid), int(gid), int(gid))
    os.setresuid(int(uid), int(uid), int(uid))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--user")
    p.add_argument("action", choices=["register", "hammer", "mdtail"])
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.user:
        _become(args.user)
    if args.action == "mdtail":
        return mdtail.main(args.args)
    shm, feed, stream, last = Path(args.args[0]), args.args[1], args.args[2], args.args[3]
    if args.action == "register":
        slot = register_reader(shm, feed, stream, last)
        listed = len(list_readers(shm, feed))
        print(json.dumps({"registered": slot is not None, "pid": os.getpid(), "listed": listed}))
        sys.stdout.flush()
        if slot is None:
            return 0
        slot.update(7, 1)
        while True:
            time.sleep(1)
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    slot = register_reader(shm, feed, stream, "hammer")
    assert slot is not None
    print(json.dumps({"registered": True, "pid": os.getpid()}))
    sys.stdout.flush()
    deadline = time.monotonic() + float(last)
    k = 1
    while not stopping and time.monotonic() < deadline:
        for _ in range(1000):
            slot.update(k, k)
            k += 1
    slot.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
