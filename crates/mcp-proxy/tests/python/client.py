"""A 2026-07-28 MCP client built with the official Python SDK (mcp 2.x), driven
by mcp-proxy's end-to-end tests (tests/e2e_python.rs). One command per run; it
prints one JSON line per result.

    client.py URL [--token T] [--name N] list-tools
    client.py URL [--token T] [--name N] list-prompts
    client.py URL [--token T] [--name N] call TOOL JSON_ARGUMENTS
    client.py URL [--token T] [--name N] listen      # prints {"acknowledged": true},
                                                     # then the first event, and exits
"""

import argparse
import json
import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation

VERSION = "2026-07-28"


def emit(value) -> None:
    print(json.dumps(value), flush=True)


async def run(args) -> None:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(
            transport,
            mode=VERSION,
            client_info=Implementation(name=args.name, version="1.0.0"),
            cache=None,
        ) as client:
            if args.command == "list-tools":
                result = await client.list_tools()
                emit({"tools": sorted(tool.name for tool in result.tools)})
            elif args.command == "list-prompts":
                result = await client.list_prompts()
                emit({"prompts": sorted(prompt.name for prompt in result.prompts)})
            elif args.command == "call":
                result = await client.call_tool(args.tool, json.loads(args.arguments))
                texts = [getattr(item, "text", None) for item in result.content]
                emit({"text": texts, "isError": bool(result.is_error)})
            elif args.command == "listen":
                async with client.listen(tools_list_changed=True) as subscription:
                    emit({"acknowledged": True})
                    async for event in subscription:
                        emit({"event": type(event).__name__})
                        break


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--name", default="e2e-python-client")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list-tools")
    commands.add_parser("list-prompts")
    commands.add_parser("listen")
    call = commands.add_parser("call")
    call.add_argument("tool")
    call.add_argument("arguments")
    anyio.run(run, parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
