/* The configuration file: config_parse on the JSON text, ${NAME} expanded
 * from the environment (set here to what the seeds, copies of config/ and
 * deploy/docker/config.json, name). A config comes back exactly when no
 * error was collected, and every error names a JSON path and a reason. */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const env[][2] = {
		{ "DATABASE_URL", "postgresql://broker@127.0.0.1:5432/broker" },
		{ "BROKER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" },
		{ "BROKER_COOKIE_SECRET", "HxwdHhgZGhsUFRYXEBESEwwNDg8ICQoLBAUGBwABAgM=" },
		{ "BROKER_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef0123456789abcdef" },
		{ "BROKER_PORT", "8080" },
		{ "BROKER_PUBLIC_URL", "https://mcp.example.com" },
		{ "DEMO_IDP_PORT", "9001" },
		{ "DEMO_MCP_PORT", "9002" },
		{ "GITHUB_CLIENT_ID", "Iv1.0123456789abcdef" },
		{ "GITHUB_CLIENT_SECRET", "0123456789abcdef0123456789abcdef01234567" },
		{ "MCP_DOWNSTREAM_URL", "http://127.0.0.1:9002/mcp" },
	};
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
		setenv(env[i][0], env[i][1], 1);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_errors errs;
	struct config *c = config_parse((const char *)data, size, &errs);
	FUZZ_CHECK((c != NULL) == (errs.n == 0));
	for (size_t i = 0; i < errs.n; i++)
		FUZZ_CHECK(errs.msg[i] && errs.msg[i][0]);
	config_free(&c);
	FUZZ_CHECK(c == NULL);
	config_errors_free(&errs);
	return 0;
}
