#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct gp_agent_status latest = { .state = "stopped" };

void gp_agent_status_publish(const struct gp_agent_status *st)
{
	pthread_mutex_lock(&lock);
	latest = *st;
	pthread_mutex_unlock(&lock);
}

void gp_agent_status_get(struct gp_agent_status *ret)
{
	pthread_mutex_lock(&lock);
	*ret = latest;
	pthread_mutex_unlock(&lock);
}

/* Values are single lines: a newline in a reason (from a peer's BYE text,
 * say) would start a forged key. */
static void one_line(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
	for (char *p = dst; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

int gp_agent_status_format(const struct gp_agent_status *st, char *buf,
			   size_t len)
{
	char reason[sizeof(st->reason)], endpoint[sizeof(st->endpoint)];
	int n;

	one_line(reason, sizeof(reason), st->reason);
	one_line(endpoint, sizeof(endpoint), st->endpoint);
	n = snprintf(buf, len,
		     "state=%s\nreason=%s\npool=%s\nendpoint=%s\ndevice=%s\n"
		     "since=%" PRId64 "\nminibatches=%" PRIu64 "\npid=%" PRIu64
		     "\n",
		     st->state, reason, st->pool, endpoint, st->device, st->since,
		     st->minibatches, st->pid);
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return n;
}

int gp_agent_status_parse(const char *text, struct gp_agent_status *ret)
{
	struct gp_agent_status st;
	const char *p = text;
	int have_state = 0;

	memset(&st, 0, sizeof(st));
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		const char *eq = memchr(p, '=', ll);

		if (eq) {
			size_t kl = (size_t)(eq - p), vl = ll - kl - 1;
			char v[GP_AGENT_STATUS_TEXT_MAX];

			if (vl >= sizeof(v))
				vl = sizeof(v) - 1;
			memcpy(v, eq + 1, vl);
			v[vl] = '\0';
#define KEY(k) (kl == sizeof(k) - 1 && memcmp(p, k, kl) == 0)
			if (KEY("state")) {
				snprintf(st.state, sizeof(st.state), "%.*s",
					 (int)sizeof(st.state) - 1, v);
				have_state = 1;
			} else if (KEY("reason"))
				snprintf(st.reason, sizeof(st.reason), "%s", v);
			else if (KEY("pool"))
				snprintf(st.pool, sizeof(st.pool), "%.*s",
					 (int)sizeof(st.pool) - 1, v);
			else if (KEY("endpoint"))
				snprintf(st.endpoint, sizeof(st.endpoint), "%s", v);
			else if (KEY("device"))
				snprintf(st.device, sizeof(st.device), "%.*s",
					 (int)sizeof(st.device) - 1, v);
			else if (KEY("since"))
				st.since = strtoll(v, NULL, 10);
			else if (KEY("minibatches"))
				st.minibatches = strtoull(v, NULL, 10);
			else if (KEY("pid"))
				st.pid = strtoull(v, NULL, 10);
#undef KEY
		}
		p = nl ? nl + 1 : NULL;
	}
	if (!have_state || !st.state[0])
		return -EBADMSG;
	*ret = st;
	return 0;
}
