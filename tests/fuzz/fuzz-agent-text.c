/* Fuzz target for the agent's small text decoders: the control socket's
 * status reply (gp_agent_status_parse) and the [limits] hours windows
 * (gp_hours_parse). What parses must format and parse back the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_agent_status st, back;
	struct gp_hours h, h2;
	char buf[4096], hb[GP_POLICY_WINDOWS_MAX * 12 + 1];
	char *text;

	if (size > 8192)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (gp_agent_status_parse(text, &st) == 0) {
		if (gp_agent_status_format(&st, buf, sizeof(buf)) < 0 ||
		    gp_agent_status_parse(buf, &back) != 0 ||
		    strcmp(st.state, back.state) != 0 ||
		    st.minibatches != back.minibatches ||
		    st.have_job != back.have_job ||
		    st.credit_updates != back.credit_updates ||
		    st.eval_epochs != back.eval_epochs || st.eta_s != back.eta_s)
			abort();
	}
	if (gp_hours_parse(text, &h) == 0) {
		gp_hours_format(&h, hb, sizeof(hb));
		if (gp_hours_parse(hb, &h2) != 0 || h2.n != h.n ||
		    memcmp(h.start, h2.start, sizeof(h.start)) != 0 ||
		    memcmp(h.end, h2.end, sizeof(h.end)) != 0)
			abort();
		for (unsigned m = 0; m < 1440; m += 7)
			(void)gp_hours_contains(&h, m);
	}
	free(text);
	return 0;
}
