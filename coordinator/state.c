#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "log.h"

int gp_coord_state_open(struct gp_coord_state *st, const char *dir,
			unsigned flags)
{
	char err[512];
	int r;

	memset(st, 0, sizeof(*st));
	snprintf(st->dir, sizeof(st->dir), "%s", dir);
	snprintf(st->key_path, sizeof(st->key_path), "%s/coordinator.key",
		 dir);
	snprintf(st->ledger_path, sizeof(st->ledger_path), "%s/ledger.db",
		 dir);
	r = gp_identity_load(st->key_path, &st->id, err, sizeof(err));
	if (r < 0) {
		if (r == -ENOENT)
			gp_error("%s (run 'gradpool-coordinator init --state %s' "
				 "first)", err, dir);
		else
			gp_error("%s", err);
		return r;
	}
	r = gp_identity_derive_key(st->id, "gp-token-hash", st->token_hash_key);
	if (r < 0)
		goto fail;
	r = gp_ledger_open(st->ledger_path, flags & ~GP_LEDGER_QUIET_OLD,
			   &st->ledger, err, sizeof(err));
	if (r < 0) {
		if (r != -EROFS || !(flags & GP_LEDGER_QUIET_OLD))
			gp_error("%s", err);
		goto fail;
	}
	return 0;
fail:
	gp_coord_state_close(st);
	return r;
}

void gp_coord_state_close(struct gp_coord_state *st)
{
	gp_ledger_close(st->ledger);
	st->ledger = NULL;
	gp_identity_destroy(st->id);
	st->id = NULL;
	explicit_bzero(st->token_hash_key, sizeof(st->token_hash_key));
}

/* One serve per state directory: an exclusive flock(2) on the directory
 * itself, like the agent's (no file of its own: a serve that fails leaves
 * the directory as it found it). The CLI probes it with a shared lock it
 * drops at once, so a serve starting during such a probe retries for a
 * while before it believes another serve runs. */
#define LOCK_RETRY_MS 1000
#define LOCK_STEP_MS 10

int gp_coord_state_lock(const char *dir)
{
	int fd, r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return gp_log_errno(GP_LOG_ERROR, -errno, "%s", dir);
	for (int waited = 0;; waited += LOCK_STEP_MS) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		r = -errno;
		if (r != -EWOULDBLOCK || waited >= LOCK_RETRY_MS)
			break;
		usleep(LOCK_STEP_MS * 1000);
	}
	if (r == -EWOULDBLOCK) {
		gp_error("another serve runs on %s", dir);
		r = -EBUSY;
	} else {
		gp_log_errno(GP_LOG_ERROR, r, "%s: lock", dir);
	}
	close(fd);
	return r;
}

int gp_coord_state_serve_running(const char *dir)
{
	int fd, r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0)
		r = 0;
	else
		r = errno == EWOULDBLOCK ? 1 : -errno;
	close(fd); /* drops the shared lock */
	return r;
}
