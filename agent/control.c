#include "control.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"

struct conn {
	uv_pipe_t pipe;
	struct gp_control *ctl;
	struct conn *next, *prev;
	char line[GP_CONTROL_LINE_MAX];
	size_t len;
	bool answered;
	bool denied;              /* answer "permission denied" to the line */
	uv_write_t wreq;
	char reply[GP_CONTROL_REPLY_MAX];
};

struct gp_control {
	uv_pipe_t server;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	gp_control_handler *handler;
	void *data;
	struct conn *conns;
	bool closing;
};

static void on_server_closed(uv_handle_t *h)
{
	struct gp_control *c = h->data;

	/* Connections close on their own callbacks; each unlinks itself. The
	 * control block goes once they are gone (see conn_closed). */
	if (!c->conns)
		free(c);
	else
		c->server.data = NULL;
}

static void conn_closed(uv_handle_t *h)
{
	struct conn *k = h->data;
	struct gp_control *c = k->ctl;

	if (k->prev)
		k->prev->next = k->next;
	else
		c->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	free(k);
	if (c->closing && !c->conns && !c->server.data)
		free(c);
}

static void conn_close(struct conn *k)
{
	if (!uv_is_closing((uv_handle_t *)&k->pipe))
		uv_close((uv_handle_t *)&k->pipe, conn_closed);
}

static void on_written(uv_write_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

static void answer(struct conn *k, const char *line)
{
	uv_buf_t b;

	k->answered = true;
	uv_read_stop((uv_stream_t *)&k->pipe);
	k->reply[0] = '\0';
	if (line)
		k->ctl->handler(line, k->reply, sizeof(k->reply), k->ctl->data);
	else
		snprintf(k->reply, sizeof(k->reply), "error: permission denied\n");
	b = uv_buf_init(k->reply, (unsigned)strlen(k->reply));
	k->wreq.data = k;
	if (uv_write(&k->wreq, (uv_stream_t *)&k->pipe, &b, 1, on_written) < 0)
		conn_close(k);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *k = h->data;

	(void)suggested;
	*buf = uv_buf_init(k->line + k->len,
			   (unsigned)(sizeof(k->line) - 1 - k->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct conn *k = st->data;
	char *nl;

	(void)buf;
	if (n < 0) {
		/* EOF before a newline: the whole text is the command. */
		if (n == UV_EOF && k->len && !k->answered) {
			k->line[k->len] = '\0';
			answer(k, k->denied ? NULL : k->line);
			return;
		}
		conn_close(k);
		return;
	}
	k->len += (size_t)n;
	k->line[k->len] = '\0';
	nl = strchr(k->line, '\n');
	if (nl) {
		*nl = '\0';
		answer(k, k->denied ? NULL : k->line);
	} else if (k->len >= sizeof(k->line) - 1) {
		conn_close(k); /* a line too long is no command of ours */
	}
}

/* Root, or the user the agent runs as (the service user). */
static bool peer_allowed(uv_pipe_t *p)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;

	if (uv_fileno((uv_handle_t *)p, &fd) < 0)
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void on_connection(uv_stream_t *server, int status)
{
	struct gp_control *c = server->data;
	struct conn *k;

	if (status < 0 || !c)
		return;
	k = calloc(1, sizeof(*k));
	if (!k)
		return;
	k->ctl = c;
	uv_pipe_init(server->loop, &k->pipe, 0);
	k->pipe.data = k;
	k->next = c->conns;
	if (c->conns)
		c->conns->prev = k;
	c->conns = k;
	if (uv_accept(server, (uv_stream_t *)&k->pipe) < 0) {
		conn_close(k);
		return;
	}
	if (!peer_allowed(&k->pipe)) {
		/* Read the line before saying no: closing with unread data
		 * would reset the connection before the client reads why. */
		gp_warn("control socket: refused a client that is neither root "
			"nor this agent's user");
		k->denied = true;
	}
	uv_read_start((uv_stream_t *)&k->pipe, on_alloc, on_read);
}

/* True when something accepts connections on the socket at path. */
static bool socket_answers(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	bool live;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return live;
}

int gp_control_create(uv_loop_t *loop, const char *path,
		      gp_control_handler *handler, void *data,
		      struct gp_control **ret)
{
	struct gp_control *c;
	int r;

	if (!loop || !path || !handler || !ret)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (strlen(path) >= sizeof(c->path)) {
		free(c);
		return -ENAMETOOLONG;
	}
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->handler = handler;
	c->data = data;
	r = uv_pipe_init(loop, &c->server, 0);
	if (r < 0) {
		free(c);
		return r;
	}
	c->server.data = c;
	/* A socket left by an agent that died is replaced; one a live agent
	 * answers on is not (taking it over would leave that agent
	 * unreachable: no pause, no status). */
	if (socket_answers(path)) {
		r = -EADDRINUSE;
		goto fail_kept;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		r = -errno;
		goto fail;
	}
	r = uv_pipe_bind(&c->server, path);
	if (r < 0)
		goto fail;
	if (chmod(path, 0660) < 0) {
		r = -errno;
		goto fail;
	}
	r = uv_listen((uv_stream_t *)&c->server, 8, on_connection);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	unlink(path);
fail_kept:
	c->conns = NULL;
	uv_close((uv_handle_t *)&c->server, on_server_closed);
	return r;
}

void gp_control_destroy(struct gp_control *c)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	unlink(c->path);
	for (struct conn *k = c->conns; k; k = k->next)
		conn_close(k);
	uv_close((uv_handle_t *)&c->server, on_server_closed);
}

int gp_control_request(const char *path, const char *line, char *reply,
		       size_t len, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t off = 0, ll;
	uint64_t deadline = gp_mono_us() + (uint64_t)timeout_ms * 1000;
	int fd, r;

	if (!path || !line || !reply || !len)
		return -EINVAL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto out;
	}
	ll = strlen(line);
	if (write(fd, line, ll) != (ssize_t)ll || write(fd, "\n", 1) != 1) {
		r = -errno;
		goto out;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = gp_mono_us();
		ssize_t n;

		if (now >= deadline) {
			r = -ETIMEDOUT;
			goto out;
		}
		r = poll(&pfd, 1, (int)((deadline - now) / 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			r = -errno;
			goto out;
		}
		if (r == 0)
			continue;
		n = read(fd, reply + off, len - 1 - off);
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0 || off + (size_t)n >= len - 1) {
			off += (size_t)n;
			break;
		}
		off += (size_t)n;
	}
	reply[off] = '\0';
	r = strncmp(reply, "error: permission denied", 24) == 0 ? -EACCES :
								  (int)off;
out:
	close(fd);
	return r;
}

/* ---- while the agent starts ------------------------------------------- */

struct gp_control_starting {
	uv_loop_t loop;
	uv_async_t stop;
	uv_thread_t thread;
	struct gp_control *ctl;
	bool stopped;
};

static void starting_handler(const char *line, char *reply, size_t len,
			     void *data)
{
	struct gp_agent_status st;

	(void)data;
	gp_agent_status_get(&st);
	if (strcmp(line, "status") == 0) {
		if (gp_agent_status_format(&st, reply, len) < 0)
			snprintf(reply, len, "error: status too long\n");
	} else {
		snprintf(reply, len, "error: the agent is starting (%.200s); try "
			 "again in a moment\n", st.reason);
	}
}

static void starting_on_stop(uv_async_t *a)
{
	struct gp_control_starting *t = a->data;

	gp_control_destroy(t->ctl);
	t->ctl = NULL;
	uv_close((uv_handle_t *)&t->stop, NULL);
}

static void starting_run(void *arg)
{
	struct gp_control_starting *t = arg;

	uv_run(&t->loop, UV_RUN_DEFAULT);
}

int gp_control_starting_start(const char *path,
			      struct gp_control_starting **ret)
{
	struct gp_control_starting *t;
	int r;

	if (!path || !ret)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	r = uv_loop_init(&t->loop);
	if (r < 0) {
		free(t);
		return r;
	}
	t->stop.data = t;
	r = uv_async_init(&t->loop, &t->stop, starting_on_stop);
	if (r < 0) {
		uv_loop_close(&t->loop);
		free(t);
		return r;
	}
	r = gp_control_create(&t->loop, path, starting_handler, NULL, &t->ctl);
	if (r >= 0)
		r = uv_thread_create(&t->thread, starting_run, t);
	if (r < 0) {
		/* Closes what was opened, on this thread: no thread runs. */
		starting_on_stop(&t->stop);
		uv_run(&t->loop, UV_RUN_DEFAULT);
		uv_loop_close(&t->loop);
		free(t);
		return r;
	}
	*ret = t;
	return 0;
}

void gp_control_starting_stop(struct gp_control_starting *t)
{
	if (!t || t->stopped)
		return;
	t->stopped = true;
	uv_async_send(&t->stop);
	uv_thread_join(&t->thread);
	uv_loop_close(&t->loop);
}

void gp_control_starting_destroy(struct gp_control_starting *t)
{
	gp_control_starting_stop(t);
	free(t);
}
