/* common/httpd.c: the HTML builder and its escaping, the loopback-only
 * listen addresses, and a real server on 127.0.0.1 answering a handler:
 * GET and HEAD only, a Host header that names another site refused (421,
 * DNS rebinding), a wrong port refused, the headers every page gets. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"
#include "test.h"

static void test_html(void)
{
	struct gp_html b = { 0 };
	char *s = NULL;

	gp_html_put(&b, "<p title=\"");
	gp_html_text(&b, "a<b>&\"c'");
	gp_html_put(&b, "\">%d</p>", 42);
	ASSERT_OK(gp_html_take(&b, &s));
	ASSERT_STR_EQ(s, "<p title=\"a&lt;b&gt;&amp;&quot;c&#39;\">42</p>");
	free(s);
	ASSERT(b.p == NULL && b.len == 0);
	/* Nothing put is still a page. */
	ASSERT_OK(gp_html_take(&b, &s));
	ASSERT_STR_EQ(s, "");
	free(s);
	/* Past the first allocation. */
	for (int i = 0; i < 5000; i++)
		gp_html_put(&b, "%04d", i);
	ASSERT_OK(gp_html_take(&b, &s));
	ASSERT_EQ(strlen(s), 20000);
	ASSERT(strncmp(s + 19996, "4999", 4) == 0);
	free(s);
	b.failed = true;
	gp_html_put(&b, "x");
	ASSERT_EQ(gp_html_take(&b, &s), -ENOMEM);
}

static void test_listen(void)
{
	bool v6 = true;
	uint16_t port = 0;

	ASSERT_OK(gp_httpd_listen_parse("127.0.0.1:7180", &v6, &port));
	ASSERT(!v6);
	ASSERT_EQ(port, 7180);
	ASSERT_OK(gp_httpd_listen_parse("LOCALHOST:0", &v6, &port));
	ASSERT(!v6);
	ASSERT_EQ(port, 0);
	ASSERT_OK(gp_httpd_listen_parse("[::1]:8080", &v6, &port));
	ASSERT(v6);
	ASSERT_OK(gp_httpd_listen_parse("::1:8081", &v6, &port));
	ASSERT(v6);
	ASSERT_EQ(port, 8081);
	static const char *const bad[] = {
		"0.0.0.0:7180", "192.168.1.2:7180", "127.0.0.2:7180",
		"127.0.0.1:", "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1:65536",
		"127.0.0.1:80x", "127.0.0.1", "", "example.org:80",
		"localhost.example.org:80",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ASSERT_EQ(gp_httpd_listen_parse(bad[i], NULL, NULL), -EINVAL);
		ASSERT_EQ(gp_httpd_start(bad[i], NULL, NULL, NULL), -EINVAL);
	}
	ASSERT_EQ(gp_httpd_listen_parse(NULL, NULL, NULL), -EINVAL);
}

static int handled;

static unsigned handler(void *data, const char *url, const char **ret_type,
			char **ret_body)
{
	ASSERT_STR_EQ(data, "mine");
	handled++;
	if (strcmp(url, "/") == 0) {
		*ret_type = "text/html; charset=utf-8";
		*ret_body = strdup("<p>hello</p>");
		return 200;
	}
	*ret_body = strdup("not found\n");
	return 404;
}

/* One request on a fresh connection; the answer (status line and all)
 * into buf. */
static void request(uint16_t port, const char *text, char *buf, size_t size)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ASSERT(fd >= 0);
	ASSERT_OK(connect(fd, (struct sockaddr *)&a, sizeof(a)));
	ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	while (got + 1 < size && (n = read(fd, buf + got, size - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	close(fd);
}

static void test_server(void)
{
	struct gp_httpd *h = NULL, *h2 = NULL;
	char mine[] = "mine", req[512], buf[4096];
	uint16_t port;

	ASSERT_OK(gp_httpd_start("127.0.0.1:0", handler, mine, &h));
	port = gp_httpd_port(h);
	ASSERT_GT(port, 0);
	/* The port is taken. */
	snprintf(req, sizeof(req), "127.0.0.1:%u", port);
	ASSERT_EQ(gp_httpd_start(req, handler, mine, &h2), -EADDRINUSE);

	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
		 "Connection: close\r\n\r\n", port);
	request(port, req, buf, sizeof(buf));
	ASSERT(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	ASSERT_NOT_NULL(strstr(buf, "<p>hello</p>"));
	ASSERT_NOT_NULL(strstr(buf, "text/html; charset=utf-8"));
	ASSERT_NOT_NULL(strstr(buf, "Cache-Control: no-store"));
	ASSERT_NOT_NULL(strstr(buf, "Content-Security-Policy: default-src "
				    "'none'"));
	ASSERT_EQ(handled, 1);

	snprintf(req, sizeof(req), "GET /x HTTP/1.1\r\nHost: localhost:%u\r\n"
		 "Connection: close\r\n\r\n", port);
	request(port, req, buf, sizeof(buf));
	ASSERT(strncmp(buf, "HTTP/1.1 404", 12) == 0);
	/* HTTP/1.0 without Host is let through. */
	request(port, "GET / HTTP/1.0\r\n\r\n", buf, sizeof(buf));
	ASSERT(strncmp(buf, "HTTP/1.0 200", 12) == 0 ||
	       strncmp(buf, "HTTP/1.1 200", 12) == 0);
	ASSERT_EQ(handled, 3);

	/* Refused before the handler: another site's name, our name on
	 * another port, another method. */
	char hosts[4][64];

	snprintf(hosts[0], sizeof(hosts[0]), "evil.example:%u", port);
	snprintf(hosts[1], sizeof(hosts[1]), "127.0.0.1.evil.example");
	snprintf(hosts[2], sizeof(hosts[2]), "127.0.0.1:1%u", port);
	snprintf(hosts[3], sizeof(hosts[3]), "127.0.0.1:");
	for (size_t i = 0; i < 4; i++) {
		snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n"
			 "Connection: close\r\n\r\n", hosts[i]);
		request(port, req, buf, sizeof(buf));
		ASSERT(strncmp(buf, "HTTP/1.1 421", 12) == 0);
	}
	snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
		 "Content-Length: 0\r\nConnection: close\r\n\r\n", port);
	request(port, req, buf, sizeof(buf));
	ASSERT(strncmp(buf, "HTTP/1.1 405", 12) == 0);
	ASSERT_EQ(handled, 3);
	gp_httpd_stop(h);
	gp_httpd_stop(NULL);
}

int main(void)
{
	test_html();
	test_listen();
	test_server();
	printf("httpd: all tests passed\n");
	return 0;
}
