/* The ledger's credit: a member's opt-in public name, and the per member
 * and job totals of the work that earns credit (GP_LEDGER_CREDIT_RULE),
 * which schema step 7's triggers keep in step with the update log.
 * ledger.h documents the functions; coordinator/credit.c turns the totals
 * into GFLOP and the listings. */
#include "ledger.h"
#include "ledger-impl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int gp_ledger_agent_set_public_name(struct gp_ledger *l, int64_t id,
				    const char *name)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot set a public name",
		      "UPDATE agents SET public_name = nullif(?2, '') "
		      "WHERE id = ?1",
		      "it", id, name ? name : "");
	if (r == 0) {
		gp_db_set_err(&l->c, "no such agent: %lld", (long long)id);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

static int read_credit_row(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_credit_row *row = arg;

	row->agent_id = sqlite3_column_int64(st, 0);
	gp_db_column_text(st, 1, row->name, sizeof(row->name));
	gp_db_column_text(st, 2, row->public_name, sizeof(row->public_name));
	gp_db_column_text(st, 3, row->fingerprint, sizeof(row->fingerprint));
	row->joined_at = sqlite3_column_int64(st, 4);
	row->revoked_at = sqlite3_column_int64(st, 5);
	row->job_id = sqlite3_column_int64(st, 6);
	row->updates = sqlite3_column_int64(st, 7);
	row->samples = sqlite3_column_int64(st, 8);
	return 0;
}

int gp_ledger_credit_list(struct gp_ledger *l, int64_t agent_id,
			  struct gp_ledger_credit_row **ret_rows, size_t *ret_n)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list credit", sizeof(**ret_rows),
		       read_credit_row, (void **)ret_rows, ret_n,
		       "SELECT a.id, a.name, a.public_name, a.fingerprint, "
		       "a.joined_at, coalesce(a.revoked_at, 0), "
		       "coalesce(c.job_id, 0), coalesce(c.updates, 0), "
		       "coalesce(c.samples, 0) "
		       "FROM agents a LEFT JOIN credit c ON c.agent_id = a.id "
		       "WHERE ?1 = 0 OR a.id = ?1 ORDER BY a.id, c.job_id",
		       "i", agent_id);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* The log's totals under the rule, as the credit table should hold them. */
#define LOG_TOTALS                                                             \
	"SELECT agent_id, job_id, count(*) AS n, sum(samples) AS s "          \
	"FROM updates WHERE " GP_LEDGER_CREDIT_RULE " GROUP BY agent_id, job_id"

int gp_ledger_credit_check(struct gp_ledger *l, bool fix,
			   int64_t *ret_mismatched)
{
	int64_t n = 0;
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_exec(&l->c, fix ? "BEGIN IMMEDIATE" : "BEGIN");
	if (r < 0)
		goto out;
	/* Pairs with credit but no counted update hold zeros after a
	 * rollback: those agree with an absent pair. */
	r = gp_db_row(&l->c, "cannot check credit", gp_db_int64, &n,
		      "SELECT count(*) FROM (" LOG_TOTALS ") u "
		      "FULL OUTER JOIN credit c "
		      "ON c.agent_id = u.agent_id AND c.job_id = u.job_id "
		      "WHERE coalesce(u.n, 0) != coalesce(c.updates, 0) "
		      "OR coalesce(u.s, 0) != coalesce(c.samples, 0)",
		      "");
	if (r >= 0 && fix && n > 0) {
		r = gp_db_exec(&l->c, "DELETE FROM credit");
		if (r >= 0)
			r = gp_db_exec(&l->c,
				       "INSERT INTO credit (agent_id, job_id, "
				       "updates, samples) "
				       "SELECT agent_id, job_id, n, s FROM (" LOG_TOTALS ")");
	}
	if (r >= 0)
		r = gp_db_exec(&l->c, "COMMIT");
	if (r < 0)
		gp_db_rollback(&l->c);
out:
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		return r;
	*ret_mismatched = n;
	return 0;
}
