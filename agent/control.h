/* The agent's local control socket: a Unix stream socket on which
 * `gradpool-agent status|pause|resume|reload` talk to the running agent.
 *
 * One request per connection: the client writes one line (a command and
 * its arguments, at most GP_CONTROL_LINE_MAX bytes with the newline), the
 * agent answers with text and closes. The socket is mode 0660 in a 0750
 * directory, and each connection's peer credentials (SO_PEERCRED) must be
 * root or the agent's own user: anyone else gets "error: permission
 * denied" and nothing more. */
#ifndef GP_AGENT_CONTROL_H
#define GP_AGENT_CONTROL_H

#include <stddef.h>
#include <uv.h>

#define GP_CONTROL_LINE_MAX 256
#define GP_CONTROL_REPLY_MAX 4096

struct gp_control;

/* Handles one command line (borrowed, without the newline) and writes the
 * reply (text, ending in a newline) into reply (reply_len bytes). Runs on
 * the loop thread. */
typedef void gp_control_handler(const char *line, char *reply,
				size_t reply_len, void *data);

/* Listens on path (borrowed; a stale socket there is replaced, one a live
 * agent answers on is not: -EADDRINUSE) on loop. On success *ret is owned
 * by the caller (gp_control_destroy). Returns 0 or a negative errno. */
int gp_control_create(uv_loop_t *loop, const char *path,
		      gp_control_handler *handler, void *data,
		      struct gp_control **ret);

/* Closes the socket and every open connection, removes the socket file and
 * frees c once the loop has run the close callbacks. NULL is a no-op. */
void gp_control_destroy(struct gp_control *c);

/* The control socket of an agent that is starting (benchmarking its
 * devices, before its loop runs), on a thread and loop of its own:
 * "status" answers with the published snapshot (gp_agent_status_get),
 * anything else with "error: the agent is starting (REASON)". Listens on
 * path (borrowed) as gp_control_create does. On success *ret is owned by
 * the caller (gp_control_starting_destroy), and it must be stopped before
 * a session listens on the same path. Returns 0 or a negative errno. */
struct gp_control_starting;
int gp_control_starting_start(const char *path,
			      struct gp_control_starting **ret);

/* Stops the thread and removes the socket; t stays valid, and stopping
 * it again does nothing. NULL is a no-op. */
void gp_control_starting_stop(struct gp_control_starting *t);

/* Stops t if needed and frees it. NULL is a no-op. */
void gp_control_starting_destroy(struct gp_control_starting *t);

/* Client: sends line (borrowed) to the agent listening at path and writes
 * its reply, NUL-terminated, into reply (len bytes). Blocks at most
 * timeout_ms. Returns the reply's length, -ENOENT / -ECONNREFUSED when no
 * agent listens, -EACCES, -ETIMEDOUT or another negative errno. */
int gp_control_request(const char *path, const char *line, char *reply,
		       size_t len, int timeout_ms);

#endif
