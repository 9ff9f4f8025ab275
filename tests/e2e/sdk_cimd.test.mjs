// End-to-end with a Client ID Metadata Document (issue 6): the same SDK
// journey as sdk.test.mjs (sdk_journey.mjs), but the SDK's OAuthClientProvider
// has a clientMetadataUrl served over HTTPS by the test (tests/lib/tls.mjs, a
// throwaway CA the broker trusts, reached through a cimd_resolve pin with the
// 127.0.0.1/32 testing allowance) and the broker advertises
// client_id_metadata_document_supported. It proves the SDK uses that URL as
// its client_id and never calls /register even with DCR on, that the consent
// page names the document and its host, that the URL client_id is used at the
// token endpoint and reused on step-up, and that the broker fetched the
// document once and served every later step from its cache.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and
// `npm ci` in tests/ (tests/run.sh does it).
import { defineSdkJourney } from './sdk_journey.mjs';

defineSdkJourney({ cimd: true });
