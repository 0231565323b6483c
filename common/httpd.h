/* What the two local pages share, the agent's (agent/web.c) and the pool
 * owner's (coordinator/web.c): an HTML string builder and a small HTTP
 * server on a loopback address. libmicrohttpd is used here and nowhere
 * else.
 *
 * The server answers GET and HEAD only, to requests whose Host header
 * names a loopback address with its port (or none, as HTTP/1.0 allows):
 * a site the user visits could otherwise read the page through DNS
 * rebinding, its own name pointed at 127.0.0.1. Every answer says
 * no-store and a Content-Security-Policy that lets the page load nothing
 * from elsewhere. */
#ifndef GP_HTTPD_H
#define GP_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- HTML ---------------------------------------------------------------- */

/* A growing string. Zero-initialise it; after an allocation failure it
 * stays failed and takes nothing more. */
struct gp_html {
	char *p;
	size_t len, cap;
	bool failed;
};

/* Appends printf-style text, as it is (markup). */
void gp_html_put(struct gp_html *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends s (borrowed; text from a database or a peer), escaped for HTML
 * text and attribute values. */
void gp_html_text(struct gp_html *b, const char *s);

/* Hands the text over: *ret (malloc'd, owned by the caller) and 0, or
 * -ENOMEM after a failure (the text is freed). b is empty again either
 * way. */
int gp_html_take(struct gp_html *b, char **ret);

/* ---- the server ------------------------------------------------------------ */

/* Parses "ADDR:PORT" for a page: ADDR must be 127.0.0.1, localhost, [::1]
 * or ::1, PORT 0 (any) to 65535. *ret_v6 and *ret_port (may be NULL) get
 * what it says. Returns 0 or -EINVAL. */
int gp_httpd_listen_parse(const char *s, bool *ret_v6, uint16_t *ret_port);

/* Answers one GET or HEAD of url (borrowed, the path): writes *ret_body
 * (malloc'd, taken by the server) and *ret_type (a static string) and
 * returns the HTTP status (200, 404, 500 ...); a NULL body closes the
 * connection without an answer. Runs on the server's thread. */
typedef unsigned gp_httpd_handler(void *data, const char *url,
				  const char **ret_type, char **ret_body);

struct gp_httpd;

/* Serves handler (with data, borrowed) on listen (borrowed, see
 * gp_httpd_listen_parse; port 0 picks one) from a thread of its own, at
 * most 16 connections at a time, each closed after 10 s idle. Returns 0
 * with *ret (gp_httpd_stop), -EINVAL for an address that is not loopback,
 * -ENOMEM, or -EADDRINUSE when the port cannot be had. */
int gp_httpd_start(const char *listen, gp_httpd_handler *handler, void *data,
		   struct gp_httpd **ret);

/* The port it listens on. */
uint16_t gp_httpd_port(const struct gp_httpd *h);

/* Stops the server (waiting for a request in progress) and frees h. NULL
 * is a no-op. */
void gp_httpd_stop(struct gp_httpd *h);

#endif
