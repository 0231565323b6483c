/* The local pages' HTML builder and loopback HTTP server: httpd.h. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- HTML ---------------------------------------------------------------- */

void gp_html_put(struct gp_html *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if (b->p && (size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 16384;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
}

void gp_html_text(struct gp_html *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			gp_html_put(b, "&lt;");
			break;
		case '>':
			gp_html_put(b, "&gt;");
			break;
		case '&':
			gp_html_put(b, "&amp;");
			break;
		case '"':
			gp_html_put(b, "&quot;");
			break;
		case '\'':
			gp_html_put(b, "&#39;");
			break;
		default:
			gp_html_put(b, "%c", *s);
		}
	}
}

int gp_html_take(struct gp_html *b, char **ret)
{
	int r = 0;

	/* An empty page is still a string. */
	if (!b->p)
		gp_html_put(b, "%s", "");
	if (b->failed) {
		free(b->p);
		r = -ENOMEM;
	} else {
		*ret = b->p;
	}
	memset(b, 0, sizeof(*b));
	return r;
}

/* ---- the server ------------------------------------------------------------ */

struct gp_httpd {
	struct MHD_Daemon *daemon;
	gp_httpd_handler *handler;
	void *data;
	uint16_t port;
};

int gp_httpd_listen_parse(const char *s, bool *ret_v6, uint16_t *ret_port)
{
	const char *colon = s ? strrchr(s, ':') : NULL;
	size_t hl;
	unsigned long port;
	char *end;
	bool v6;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if ((hl == 9 && strncmp(s, "127.0.0.1", 9) == 0) ||
	    (hl == 9 && strncasecmp(s, "localhost", 9) == 0))
		v6 = false;
	else if ((hl == 5 && strncmp(s, "[::1]", 5) == 0) ||
		 (hl == 3 && strncmp(s, "::1", 3) == 0))
		v6 = true;
	else
		return -EINVAL;
	if (colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port > 65535)
		return -EINVAL;
	if (ret_v6)
		*ret_v6 = v6;
	if (ret_port)
		*ret_port = (uint16_t)port;
	return 0;
}

/* Queues body (taken; freed by libmicrohttpd) with the headers every page
 * gets. */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
			     const char *type, char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (!body)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(body), body,
					       MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	/* Nothing on these pages needs anything from elsewhere. */
	MHD_add_response_header(resp, "Content-Security-Policy",
				"default-src 'none'; style-src 'unsafe-inline'; "
				"img-src 'self'");
	r = MHD_queue_response(c, code, resp);
	MHD_destroy_response(resp);
	return r;
}

/* True when host (a request's Host header, untrusted; NULL when absent)
 * names a loopback address, with our port if it has one. */
static bool host_allowed(const struct gp_httpd *h, const char *host)
{
	static const char *const names[] = { "127.0.0.1", "localhost",
					      "[::1]" };
	const char *colon;
	size_t len;

	if (!host)
		return true;
	colon = strrchr(host, ':');
	if (colon && strchr(colon, ']'))
		colon = NULL; /* the colon of "[::1]" itself */
	len = colon ? (size_t)(colon - host) : strlen(host);
	if (colon) {
		char *end;
		unsigned long port;

		if (colon[1] < '0' || colon[1] > '9')
			return false;
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (errno || *end || port != h->port)
			return false;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len &&
		    strncasecmp(host, names[i], len) == 0)
			return true;
	return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct gp_httpd *h = cls;
	const char *type = "text/plain";
	char *body = NULL;
	unsigned code;

	(void)version;
	(void)upload;
	(void)con_cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
			     strdup("only GET\n"));
	if (*upload_size)
		return MHD_NO;
	if (!host_allowed(h, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							 MHD_HTTP_HEADER_HOST)))
		return reply(c, MHD_HTTP_MISDIRECTED_REQUEST, "text/plain",
			     strdup("this page answers to 127.0.0.1, localhost "
				    "and [::1] only\n"));
	code = h->handler(h->data, url, &type, &body);
	return reply(c, code, type, body);
}

int gp_httpd_start(const char *listen, gp_httpd_handler *handler, void *data,
		   struct gp_httpd **ret)
{
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	struct gp_httpd *h;
	uint16_t port;
	bool v6;

	if (!handler || !ret || gp_httpd_listen_parse(listen, &v6, &port) < 0)
		return -EINVAL;
	memset(&ss, 0, sizeof(ss));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		flags |= MHD_USE_IPv6;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->handler = handler;
	h->data = data;
	h->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, h,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				     MHD_OPTION_END);
	if (!h->daemon) {
		free(h);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : port;
	*ret = h;
	return 0;
}

uint16_t gp_httpd_port(const struct gp_httpd *h)
{
	return h->port;
}

void gp_httpd_stop(struct gp_httpd *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->daemon);
	free(h);
}
