"""A 2026-07-28 MCP client built with the official Python SDK (mcp 2.x) for the
bridge's end-to-end tests (tests/e2e_bridge.rs): the upstream behind the proxy
speaks only the handshake revisions. One command per run; it prints one JSON
line per result.

    bridge_client.py URL [--retry-url URL2] discover
    bridge_client.py URL [--retry-url URL2] list-tools
    bridge_client.py URL [--retry-url URL2] call TOOL JSON_ARGUMENTS
    bridge_client.py URL [--retry-url URL2] progress STEPS   # trigger-long-running-operation
    bridge_client.py URL [--retry-url URL2] elicit           # trigger-elicitation-request,
                                                              # answered with name "Ada"
    bridge_client.py URL [--retry-url URL2] sample PROMPT      # trigger-sampling-request,
                                                              # answered "sampled: PROMPT..."
    bridge_client.py URL [--retry-url URL2] listen-resource URI
        # subscriptions/listen for URI; once acknowledged, turns on the server's
        # simulated resource updates (toggle-subscriber-updates) and prints the
        # first event

With --retry-url, every request carrying a `requestState` (the retry that
delivers input responses) goes to URL2: another proxy instance.
"""

import argparse
import json
import sys

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation

VERSION = "2026-07-28"


def emit(value) -> None:
    print(json.dumps(value), flush=True)


class RetryElsewhere(httpx2.AsyncHTTPTransport):
    """Sends each request carrying `requestState` to another URL."""

    def __init__(self, retry_url):
        super().__init__()
        self.retry_url = retry_url
        self.rerouted = 0

    async def handle_async_request(self, request):
        if self.retry_url and b'"requestState"' in request.content:
            request.url = httpx2.URL(self.retry_url)
            request.headers["host"] = request.url.netloc.decode()
            self.rerouted += 1
        return await super().handle_async_request(request)


async def elicit(context, params):
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def sample(context, params):
    asked = getattr(params.messages[0].content, "text", "")
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled: {asked}"),
        model="e2e-bridge-model",
    )


async def run(args) -> None:
    transport_layer = RetryElsewhere(args.retry_url)
    timeout = httpx2.Timeout(30, read=300)
    async with httpx2.AsyncClient(transport=transport_layer, timeout=timeout) as http:
        transport = streamable_http_client(args.url, http_client=http)
        mode = "auto" if args.command == "discover" else VERSION
        async with Client(
            transport,
            mode=mode,
            client_info=Implementation(name="e2e-bridge-client", version="1.0.0"),
            elicitation_callback=elicit,
            sampling_callback=sample,
            cache=None,
        ) as client:
            if args.command == "discover":
                emit({"protocolVersion": client.protocol_version})
            elif args.command == "list-tools":
                result = await client.list_tools()
                emit({"tools": sorted(tool.name for tool in result.tools)})
            elif args.command == "call":
                result = await client.call_tool(args.tool, json.loads(args.arguments))
                texts = [getattr(item, "text", None) for item in result.content]
                emit({"text": texts, "isError": bool(result.is_error)})
            elif args.command == "progress":
                seen = []

                async def on_progress(progress, total, message):
                    seen.append(progress)

                result = await client.call_tool(
                    "trigger-long-running-operation",
                    {"duration": args.steps * 0.2, "steps": args.steps},
                    progress_callback=on_progress,
                )
                texts = [getattr(item, "text", None) for item in result.content]
                emit({"text": texts, "progress": seen})
            elif args.command == "elicit":
                result = await client.call_tool("trigger-elicitation-request", {})
                texts = [getattr(item, "text", None) for item in result.content]
                emit({"text": texts, "rerouted": transport_layer.rerouted})
            elif args.command == "sample":
                result = await client.call_tool(
                    "trigger-sampling-request", {"prompt": args.prompt, "maxTokens": 10}
                )
                texts = [getattr(item, "text", None) for item in result.content]
                emit({"text": texts, "rerouted": transport_layer.rerouted})
            elif args.command == "listen-resource":
                async with client.listen(resource_subscriptions=[args.uri]) as subscription:
                    honored = list(subscription.honored.resource_subscriptions or [])
                    await client.call_tool("toggle-subscriber-updates", {})
                    async for event in subscription:
                        emit({"honored": honored, "event": type(event).__name__})
                        break


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--retry-url")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("discover")
    commands.add_parser("list-tools")
    commands.add_parser("elicit")
    progress = commands.add_parser("progress")
    progress.add_argument("steps", type=int)
    sampling = commands.add_parser("sample")
    sampling.add_argument("prompt")
    listen = commands.add_parser("listen-resource")
    listen.add_argument("uri")
    call = commands.add_parser("call")
    call.add_argument("tool")
    call.add_argument("arguments")
    anyio.run(run, parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
