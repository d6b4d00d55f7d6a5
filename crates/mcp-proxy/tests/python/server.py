"""A 2026-07-28 MCP server built with the official Python SDK (mcp 2.x), the
upstream of mcp-proxy's end-to-end tests (tests/e2e_python.rs).

It counts the POSTs it receives by `Mcp-Method`, the `Mcp-Param-*` headers
they carried (`"<name>: <value>"`) and the tool calls that were cancelled, and serves both at `GET /counts`, so a test can tell what reached
it. It prints `python-upstream listening on 127.0.0.1:<port>` once it accepts.

tools/list is cached `public` for 60 s, prompts/list `private` for 60 s
(SEP-2549 hints through the SDK's `cache_hints`).
"""

import collections
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer

counts: collections.Counter[str] = collections.Counter()

server = MCPServer(
    "e2e-python-upstream",
    version="1.0.0",
    cache_hints={
        "tools/list": CacheHint(ttl_ms=60_000, scope="public"),
        "prompts/list": CacheHint(ttl_ms=60_000, scope="private"),
    },
)


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two numbers."""
    return str(a + b)


@server.tool()
async def slow(ctx: Context, seconds: float = 30.0) -> str:
    """Reports progress every 100 ms for `seconds`; counts being cancelled."""
    steps = int(seconds * 10)
    try:
        for step in range(steps):
            await ctx.report_progress(step, steps)
            await anyio.sleep(0.1)
    except anyio.get_cancelled_exc_class():
        counts["cancelled"] += 1
        raise
    return "done"


@server.tool()
async def add_tool(ctx: Context, name: str) -> str:
    """Registers a new tool `name` and announces that the tool list changed."""

    def extra() -> str:
        return name

    server.add_tool(extra, name=name)
    await ctx.notify_tools_changed()
    return f"added {name}"


@server.prompt()
def greeting() -> str:
    """A prompt, so prompts/list has something to list."""
    return "hello"


def counting(app):
    """ASGI wrapper: counts POSTs by Mcp-Method and serves GET /counts."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            if scope["path"] == "/counts":
                body = json.dumps(counts).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            if scope["method"] == "POST":
                headers = dict(scope["headers"])
                counts[headers.get(b"mcp-method", b"none").decode()] += 1
                for name, value in scope["headers"]:
                    if name.startswith(b"mcp-param-"):
                        counts[f"{name.decode()}: {value.decode()}"] += 1
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = counting(server.streamable_http_app(streamable_http_path="/mcp"))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"python-upstream listening on 127.0.0.1:{port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
