/* Fuzz target for proto/token: every input is parsed as a token string.
 * What parses must format back to a string that parses to the same token. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_token t, t2;
	enum gp_token_error e;
	char *s, out[GP_TOKEN_STRING_MAX];

	if (size > 16384)
		return 0;
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (gp_token_parse(s, &t, &e) == 0) {
		if (e != GP_TOKEN_ERR_NONE)
			abort();
		if (gp_token_format(&t, out, sizeof(out)) < 0)
			abort();
		if (gp_token_parse(out, &t2, NULL) != 0 ||
		    memcmp(t.id, t2.id, sizeof(t.id)) != 0 ||
		    memcmp(t.secret, t2.secret, sizeof(t.secret)) != 0 ||
		    t.expires_at != t2.expires_at ||
		    t.n_endpoints != t2.n_endpoints)
			abort();
		gp_token_wipe(&t2);
	} else if (e == GP_TOKEN_ERR_NONE ||
		   gp_token_error_str(e)[0] == '\0') {
		abort();
	}
	gp_token_wipe(&t);
	free(s);
	return 0;
}
