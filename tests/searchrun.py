"""Running a Search to its end in a test, its backend closed whatever happens."""

from __future__ import annotations

import asyncio

from idealab.executor.base import Backend
from idealab.search.loop import Search


def run_to_end(search: Search, backend: Backend) -> None:
    async def go() -> None:
        try:
            await search.run()
        finally:
            await backend.close()

    asyncio.run(go())
