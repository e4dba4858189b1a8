"""A child process for the cross-process memory tests (run as a script, not collected).

    python _worker.py fill KIND WHERE AGENT PREFIX COUNT   ready, wait for a line on stdin, save
    python _worker.py ack  KIND WHERE AGENT PREFIX -1      ready, save until killed
    python _worker.py set  KIND WHERE AGENT KEY JSON       save one value and exit

Saved keys are PREFIX-i with value_for(PREFIX, i); after each save returns,
i is printed and flushed: a printed i is an acknowledged save. The store
layout under WHERE matches tests/memory/conftest.py (memory.db, files/).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from heddle.memory import AgentMemory, FileStore, MemoryStore, SQLiteStore


def value_for(prefix: str, i: int) -> dict[str, Any]:
    """The value a worker saves under f"{prefix}-{i}"."""
    return {"writer": prefix, "i": i, "pad": "x" * 60}


def open_store(kind: str, where: Path) -> MemoryStore:
    return SQLiteStore(where / "memory.db") if kind == "sqlite" else FileStore(where / "files")


async def main(mode: str, kind: str, where: Path, agent: str, prefix: str, arg: str) -> None:
    async with open_store(kind, where) as store:
        memory = AgentMemory(agent, store)
        if mode == "set":
            await memory.save(prefix, json.loads(arg))
            return
        print("ready", flush=True)
        if mode == "fill":
            sys.stdin.readline()
        count, i = int(arg), 0
        while count < 0 or i < count:
            await memory.save(f"{prefix}-{i}", value_for(prefix, i))
            print(i, flush=True)
            i += 1


if __name__ == "__main__":
    mode, kind, where, agent, prefix, arg = sys.argv[1:7]
    asyncio.run(main(mode, kind, Path(where), agent, prefix, arg))
