// A handshake-era MCP client: the official TypeScript SDK 1.x (from the npm
// install named by TEST_MCP_NPM_DIR) over Streamable HTTP, for mcp-proxy's
// bridge tests (tests/e2e_bridge_handshake.rs).
//
// Usage: node handshake_client.mjs <url> [<answer-url>]
// With <answer-url>, the client's answers to server-to-client requests (POSTs
// of JSON-RPC responses) go there (another proxy instance) instead of <url>.
// Connects (initialize), lists the tools, calls add(2, 3) and confirm (whose
// elicitation it accepts), then add_tool, waits (5 s at most) for the
// tools/list_changed notification on its GET stream, and prints one JSON line
// {"phase": 1, ..., "notified": true|false}; then waits for a line on stdin, calls add(4, 5) in
// the same session and prints {"phase": 2, ...}.
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";

const npm = process.env.TEST_MCP_NPM_DIR;
if (!npm) {
  console.error("TEST_MCP_NPM_DIR is not set: run `cargo xtask integration`");
  process.exit(2);
}
const sdk = (path) =>
  import(pathToFileURL(join(npm, "node_modules/@modelcontextprotocol/sdk/dist/esm", path)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");
const { ElicitRequestSchema, ToolListChangedNotificationSchema } = await sdk("types.js");

const url = process.argv[2];
const answerUrl = process.argv[3];
const isAnswer = (body) => {
  try {
    const message = JSON.parse(body);
    return message.method === undefined && message.id !== undefined;
  } catch {
    return false;
  }
};
let answersElsewhere = 0;
const routed = (input, init) => {
  if (answerUrl && init?.method === "POST" && typeof init.body === "string" && isAnswer(init.body)) {
    answersElsewhere += 1;
    return fetch(answerUrl, init);
  }
  return fetch(input, init);
};
const client = new Client(
  { name: "e2e-handshake-client", version: "1.0.0" },
  { capabilities: { elicitation: {} } },
);
// Every elicitation is accepted (and remembered, to print).
const elicited = [];
client.setRequestHandler(ElicitRequestSchema, async (request) => {
  elicited.push(request.params.message);
  return { action: "accept", content: { confirmed: true } };
});
const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: routed });
await client.connect(transport);

// A tools/list_changed notification on the GET stream settles `listChanged`.
let toolsChanged;
const listChanged = new Promise((resolve) => {
  toolsChanged = resolve;
});
client.setNotificationHandler(ToolListChangedNotificationSchema, async () => toolsChanged(true));

const text = (result) => result.content.map((part) => part.text).join("");
const tools = await client.listTools();
const first = await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
const confirmed = await client.callTool({ name: "confirm", arguments: { what: "launch" } });
await client.callTool({ name: "add_tool", arguments: { name: "extra" } });
const notified = await Promise.race([
  listChanged,
  new Promise((resolve) => setTimeout(() => resolve(false), 5000)),
]);
console.log(
  JSON.stringify({
    phase: 1,
    session: transport.sessionId,
    server: client.getServerVersion(),
    protocolVersion: transport.protocolVersion ?? null,
    tools: tools.tools.map((tool) => tool.name).sort(),
    add: text(first),
    confirm: text(confirmed),
    elicited,
    answersElsewhere,
    notified,
  }),
);

const lines = createInterface({ input: process.stdin });
for await (const _ of lines) break;
const second = await client.callTool({ name: "add", arguments: { a: 4, b: 5 } });
console.log(JSON.stringify({ phase: 2, session: transport.sessionId, add: text(second) }));
await client.close();
process.exit(0);
