/* gradpool-coordinator serve: the parameter server and work scheduler on a
 * libuv loop. */
#ifndef GP_SERVE_H
#define GP_SERVE_H

#include <stdbool.h>

/* Flags of gp_serve_run(). */
/* Stop once a job ended and no other follows (serve --job FILE, and
 * serve --exit-when-done). */
#define GP_SERVE_EXIT_WHEN_DONE (1u << 0)
/* Take the ledger's jobs: one a stopped serve left running, then the
 * queued ones in order (serve without --job, or --keep-serving). */
#define GP_SERVE_QUEUE (1u << 1)

/* Serves the pool with the state in state_dir until SIGINT/SIGTERM
 * arrives, or, with GP_SERVE_EXIT_WHEN_DONE, until no job is left. The
 * first job is job_path's (borrowed; may be NULL): a job interrupted
 * earlier (same job text and model, not ended) resumes from its last
 * checkpoint; one that ended is not started again (-EALREADY, said so;
 * with GP_SERVE_QUEUE serve goes on with the queue instead). listen (may
 * be NULL) overrides the job file's [pool] listen, else the ledger's
 * (init --listen) when serve starts without a job file. web (borrowed;
 * NULL: off) is the loopback ADDR:PORT of the owner's page (web.h); an
 * address in use costs the page, with a warning, not the pool. Between jobs the
 * listener stays and members that can wait (GP_CAP_JOBS) stay connected.
 * Returns 0 when stopped cleanly, else a negative errno (already
 * logged). */
int gp_serve_run(const char *state_dir, const char *job_path,
		 const char *listen, const char *web, unsigned flags);

#endif
