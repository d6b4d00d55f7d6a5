"""A handshake-revision MCP client built with the official Python SDK (mcp 2.x,
mode "legacy"), for mcp-proxy's stranded-stream tests (tests/e2e_stranded_redis.rs):
it calls the demo upstream's `countdown` with a progress token, prints
{"progress": N} for the first progress notification, then either
{"result": [texts]} or {"error": "<message>"} when the call fails, and exits 0.

    resume_client.py URL FROM INTERVAL_MS
"""

import json
import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation


def emit(value) -> None:
    print(json.dumps(value), flush=True)


async def run(url: str, start: int, interval_ms: int) -> None:
    printed = False

    async def on_progress(progress, total, message) -> None:
        nonlocal printed
        if not printed:
            printed = True
            emit({"progress": progress})

    async with create_mcp_http_client() as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport,
            mode="legacy",
            client_info=Implementation(name="resume-client", version="1.0.0"),
            cache=None,
        ) as client:
            try:
                result = await client.call_tool(
                    "countdown",
                    {"from": start, "interval_ms": interval_ms},
                    progress_callback=on_progress,
                )
            except Exception as error:  # the call failed: that is the outcome to report
                emit({"error": str(error)})
                return
            emit({"result": [getattr(item, "text", None) for item in result.content]})


def main() -> int:
    url, start, interval_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    anyio.run(run, url, start, interval_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
