"""The Python SDK 2.x server of `server.py` serving the 2026-07-28 era only:
a filter in front of it refuses every request that is not 2026-07-28 (no
`MCP-Protocol-Version: 2026-07-28` or later, or an `Mcp-Session-Id`) with 400,
as a 2026-07-28-only server refuses the handshake (the SDK serves both eras by
default and has no option to turn the handshake off). Used by
tests/e2e_bridge_handshake.rs.

Usage: modern_only_server.py [--port N] (0 or absent: a free port). It prints
`python-upstream listening on 127.0.0.1:<port>` once it accepts, and counts the
requests it refused at `GET /counts` (`refused`). Its extra tool `confirm`
asks for input with an `InputRequiredResult` (`asked` counts the questions).
"""

import argparse
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult

from server import counting, counts, server

MODERN = "2026-07-28"


@server.tool()
async def confirm(ctx: Context, what: str):
    """Asks the client to confirm `what` (an elicitation, 2026-07-28 style: an
    InputRequiredResult, answered in the retry's inputResponses)."""
    answers = ctx.input_responses
    if not answers or "confirm" not in answers:
        counts["asked"] += 1
        params = ElicitRequestFormParams(
            message=f"Confirm {what}?",
            requested_schema={
                "type": "object",
                "properties": {"confirmed": {"type": "boolean"}},
                "required": ["confirmed"],
            },
        )
        return InputRequiredResult(
            input_requests={"confirm": ElicitRequest(params=params)},
            request_state=f"asked:{what}",
        )
    answer = answers["confirm"]
    answer = answer.model_dump() if hasattr(answer, "model_dump") else answer
    return f"{what}: {answer.get('action')} {json.dumps(answer.get('content'))} state={ctx.request_state}"


def modern_only(app):
    """ASGI wrapper: 400 on anything of the handshake era."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/counts":
            headers = dict(scope["headers"])
            version = headers.get(b"mcp-protocol-version", b"").decode()
            if version < MODERN or b"mcp-session-id" in headers:
                counts["refused"] += 1
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {
                            "code": -32600,
                            "message": "this server serves 2026-07-28 only",
                        },
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = counting(modern_only(server.streamable_http_app(streamable_http_path="/mcp")))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"python-upstream listening on 127.0.0.1:{port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
