// End-to-end: the official MCP TypeScript SDK as the client, through the real
// broker, to a real SDK-built downstream MCP server (tests/fakes/mcp-server.mjs),
// with the fake GitHub (tests/fakes/idp.mjs) as the upstream IdP and the test
// as the user's browser (consent page, fake login). With Client ID Metadata
// Documents off, it proves the SDK ignores its clientMetadataUrl and registers
// dynamically (DCR), then discovers, authorizes with PKCE, connects, proxies
// tools, notifications, SSE resumption, refresh, step-up and session
// termination through the broker. The journey itself is in sdk_journey.mjs,
// shared with sdk_cimd.test.mjs.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and
// `npm ci` in tests/ (tests/run.sh does it).
import { defineSdkJourney } from './sdk_journey.mjs';

defineSdkJourney({ cimd: false });
