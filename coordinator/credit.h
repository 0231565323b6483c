/* Credit: what each member's applied work is worth, in GFLOP, and the
 * listings the owner reads (`credits`) or publishes (the leaderboard).
 *
 * A member earns, for each update that counts (GP_LEDGER_CREDIT_RULE in
 * ledger.h: applied, and not rolled back by a restore), the update's
 * samples times the FLOPs of one sample's training step of the job's
 * model (forward and backward, gp_model_spec_train_flops(): the figure the
 * agents' own statistics use). The ledger keeps the per member and job
 * counts incrementally (ledger-credit.c); this module multiplies them by
 * each job's FLOPs, read from the job's model in the ledger. Nothing here
 * scans the update log. */
#ifndef GP_CREDIT_H
#define GP_CREDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ledger.h"

/* FLOPs per sample of the jobs seen so far (jobs are few; each is looked
 * up once). Zero-initialise; gp_credit_cache_finish() frees. */
struct gp_credit_cache {
	struct gp_credit_job_flops {
		int64_t job_id;
		double flops;   /* per sample; 0: unknown */
	} *v;
	size_t n, cap;
};

void gp_credit_cache_finish(struct gp_credit_cache *c);

/* The FLOPs of one sample's training step of job job_id's model, from the
 * ledger's copy of the model (jobs.model, else the shorthand of the job
 * file); 0 when the job or its model is unknown. Cached in c. */
double gp_credit_job_flops(struct gp_credit_cache *c, struct gp_ledger *l,
			   int64_t job_id);

/* One member's credit, over every job. */
struct gp_credit_member {
	int64_t agent_id;
	char name[GP_LEDGER_NAME_MAX];               /* the agent's, owner only */
	char public_name[GP_LEDGER_PUBLIC_NAME_MAX]; /* "": not public */
	char fingerprint[GP_LEDGER_FINGERPRINT_MAX];
	int64_t joined_at, revoked_at;
	int64_t updates, samples;
	double gflop;
	bool flops_unknown;       /* a job with credit has no known FLOPs */
	/* Per job, in job order; owned by the member array. */
	struct gp_credit_job {
		int64_t job_id;
		int64_t updates, samples;
		double flops_per_sample;
		double gflop;
	} *jobs;
	size_t n_jobs;
};

/* Every member's credit (agent_id 0) or one member's, sorted by GFLOP,
 * most first (then by id). On success *ret is owned by the caller
 * (gp_credit_members_free) and *ret_n its length. cache may be NULL.
 * Returns 0 or a negative errno (the ledger's message in
 * gp_ledger_error()). */
int gp_credit_members(struct gp_ledger *l, struct gp_credit_cache *cache,
		      int64_t agent_id, struct gp_credit_member **ret,
		      size_t *ret_n);
void gp_credit_members_free(struct gp_credit_member *m, size_t n);

/* The owner's listings of members (borrowed): a table, and JSON
 * (docs/operations.md "Credit" has the keys). */
void gp_credit_write_text(FILE *out, const struct gp_credit_member *m,
			  size_t n);
void gp_credit_write_json(FILE *out, const struct gp_credit_member *m,
			  size_t n);

/* What the published page shows. */
struct gp_credit_page {
	const char *title;        /* borrowed; NULL: "gradpool leaderboard" */
	int64_t generated_at;     /* unix seconds */
	bool omit_anonymous;      /* leave out members without a public name */
	bool fingerprints;        /* show key fingerprints (the owner asked) */
};

/* Writes the leaderboard as one self-contained HTML page (no script, no
 * outside resources) to out: members with credit, not revoked, ranked;
 * a member without a public name is "anonymous" (or left out), and
 * neither its agent name nor its key fingerprint appears. Returns 0 or
 * -EIO. */
int gp_credit_write_html(FILE *out, const struct gp_credit_member *m,
			 size_t n, const struct gp_credit_page *page);

/* "1.25 TFLOP"-style human units of a GFLOP figure, into buf. */
const char *gp_credit_format_gflop(double gflop, char *buf, size_t size);

#endif
