/* Taking a mismatched member's updates back (docs/security.md "Taking
 * updates back"): the strike and the ban (gp_verify_mismatch), the
 * ledger's rows and the schedule's minibatches (roll_back), and how much
 * of their kept effect comes out of the parameters (docs/security.md
 * "How much of the effect comes out of the parameters"): all of it,
 * unless that leaves the training loss, on samples the coordinator
 * draws, more than GP_VERIFY_SHARE_MARGIN above the lowest of
 * gp_verify_shares; then the largest share that does not. On the loop
 * thread, at a mismatch only, the loss with a CPU model of its own. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "data.h"
#include "ledger.h"
#include "log.h"
#include "members.h"
#include "model.h"
#include "params.h"
#include "pool.h"
#include "scheduler.h"
#include "tokens.h"
#include "util.h"
#include "verify-impl.h"

/* Largest first: the order of preference. */
const double gp_verify_shares[GP_VERIFY_SHARES] = { 1.0, 0.5, 0.0 };

/* The samples per take-back: four minibatches' worth of images, one of a
 * language model's windows (a transformer's forward passes on the loop
 * thread), at most GP_VERIFY_SHARE_SAMPLES. */
static size_t share_samples(const struct gp_verify_env *env)
{
	size_t n = (size_t)env->batch_size * (env->train_tok ? 1 : 4);

	return n < GP_VERIFY_SHARE_SAMPLES ? n : GP_VERIFY_SHARE_SAMPLES;
}

/* The model and its scratch, made at the first take-back; on failure
 * nothing is left half made. */
static int setup(struct gp_verify *v, size_t n)
{
	const struct gp_verify_env *env = &v->env;
	size_t features = env->train_tok ? env->spec->dims[0] :
					   env->train->features;
	int r;

	if (v->share_model)
		return 0;
	r = gp_backend_create_cpu(1, &v->share_be);
	if (r >= 0)
		r = gp_model_create(v->share_be, env->spec, env->batch_size,
				    &v->share_model);
	if (r >= 0) {
		v->share_x = malloc(n * features * sizeof(float));
		v->share_y = malloc(n * gp_model_spec_labels(env->spec) *
				    sizeof(int32_t));
		v->share_idx = malloc(n * sizeof(uint32_t));
		v->share_w = malloc(v->pool->n_params * sizeof(float));
		if (!v->share_x || !v->share_y || !v->share_idx ||
		    !v->share_w)
			r = -ENOMEM;
	}
	if (r < 0)
		gp_verify_share_free(v);
	return r;
}

double gp_verify_take_share(struct gp_verify *v, const double *dw)
{
	const struct gp_verify_env *env = &v->env;
	size_t n_params = v->pool->n_params, n, count;
	const float *w = gp_params_values(v->pool->params);
	double lowest = INFINITY;
	int r;

	for (size_t s = 0; s < GP_VERIFY_SHARES; s++)
		v->share_loss[s] = NAN;
	/* No training set to judge by (a test's verifier): all of it. */
	if (!env->spec || (!env->train && !env->train_tok))
		return 1.0;
	n = share_samples(env);
	count = env->train_tok ? gp_tokens_windows(env->train_tok,
						     env->spec->dims[0]) :
				 env->train->count;
	r = count ? setup(v, n) : -ENODATA;
	if (r < 0) {
		gp_log_errno(GP_LOG_WARN, r, "verification: the whole effect "
			     "is taken back (no loss to compare)");
		return 1.0;
	}
	/* Drawn afresh from the verifier's own generator (seeded from
	 * getrandom by serve): a member cannot know them in advance. The
	 * same samples judge every share. */
	for (size_t i = 0; i < n; i++)
		v->share_idx[i] = (uint32_t)(gp_verify_next(&v->rng) % count);
	r = env->train_tok ?
		    gp_tokens_gather(env->train_tok, env->spec->dims[0],
				     v->share_idx, n, v->share_x, v->share_y) :
		    gp_data_gather(env->train, v->share_idx, n, v->share_x,
				   v->share_y);
	for (size_t s = 0; r >= 0 && s < GP_VERIFY_SHARES; s++) {
		double a = gp_verify_shares[s];
		struct gp_model_stats st;

		for (size_t i = 0; i < n_params; i++)
			v->share_w[i] = (float)((double)w[i] - a * dw[i]);
		r = gp_model_write_all(v->share_model, GP_MODEL_PARAM,
				       v->share_w);
		if (r >= 0)
			r = gp_model_evaluate(v->share_model, v->share_x,
					      v->share_y, n, &st);
		if (r >= 0)
			v->share_loss[s] = st.loss;
		if (r >= 0 && isfinite(st.loss) && st.loss < lowest)
			lowest = st.loss;
	}
	if (r < 0 || !isfinite(lowest)) {
		gp_log_errno(GP_LOG_WARN, r < 0 ? r : -EDOM,
			     "verification: the whole effect is taken back "
			     "(its loss could not be compared)");
		for (size_t s = 0; s < GP_VERIFY_SHARES; s++)
			v->share_loss[s] = NAN;
		return 1.0;
	}
	/* The largest share within the margin of the lowest loss. */
	for (size_t s = 0; s < GP_VERIFY_SHARES; s++)
		if (isfinite(v->share_loss[s]) &&
		    v->share_loss[s] <= lowest * (1 + GP_VERIFY_SHARE_MARGIN))
			return gp_verify_shares[s];
	return 1.0;
}

void gp_verify_share_free(struct gp_verify *v)
{
	gp_model_destroy(v->share_model);
	gp_backend_destroy(v->share_be);
	free(v->share_x);
	free(v->share_y);
	free(v->share_idx);
	free(v->share_w);
	v->share_model = NULL;
	v->share_be = NULL;
	v->share_x = v->share_w = NULL;
	v->share_y = NULL;
	v->share_idx = NULL;
}

/* A mismatch: takes back every update of rec's kept so far, in the
 * ledger and in the schedule, and the share *ret_share of their effect
 * out of the parameters (gp_verify_take_share). Returns the minibatches
 * taken back. */
static size_t roll_back(struct gp_verify *v, struct record *rec,
			uint64_t first, double *ret_share)
{
	struct gp_pool *pool = v->pool;
	struct gp_ledger *ledger = v->env.ledger;
	size_t n = pool->n_params, total = 0, at = 0, lost = 0, bad = 0;
	uint32_t per = gp_sched_minibatches(pool->sched);
	double *dw = calloc(n, sizeof(double));
	double *dv = calloc(n, sizeof(double));
	int64_t *pairs;
	bool kept = false;

	for (struct seg *s = rec->head; s; s = s->next) {
		total += s->n_ids;
		for (size_t i = 0; i < s->n_ids; i++)
			kept |= s->ids[i] == first;
	}
	/* The checked update was taken back already, by an earlier check's
	 * mismatch that ended while this one waited: the first of what is
	 * left marks the rest (and the pairs then fit, first not added). */
	if (!kept && total) {
		for (struct seg *s = rec->head; s && !kept; s = s->next)
			if (s->n_ids) {
				first = s->ids[0];
				kept = true;
			}
	}
	pairs = malloc((total + 1) * 2 * sizeof(*pairs));
	if (!dw || !dv || !pairs) {
		gp_error("verification: out of memory: agent %" PRId64 "'s "
			 "updates are not taken back", rec->agent_id);
		*ret_share = 0.0;
		for (size_t j = 0; j < GP_VERIFY_SHARES; j++)
			v->share_loss[j] = NAN;
		goto out;
	}
	/* The checked update's first minibatch first: its row id marks the
	 * others (gp_ledger_rollback_minibatches). */
	pairs[at++] = (int64_t)(first / per);
	pairs[at++] = (int64_t)(first % per);
	for (struct seg *s = rec->head; s; s = s->next) {
		double k1, k2;

		gp_verify_seg_k(s, v->C, v->M, &k1, &k2);

		/* A stretch of kept updates only has no sums. */
		for (size_t i = 0; s->a && i < n; i++) {
			dw[i] += s->a[i] - k1 * s->b[i];
			dv[i] += k2 * s->b[i];
		}
		if (gp_verify_raws_effect(v, s, dw, dv, n) < 0)
			gp_error("verification: an update of agent %" PRId64
				 " kept as it came could not be decoded again;"
				 " it is not taken back", rec->agent_id);
		for (size_t i = 0; i < s->n_ids; i++) {
			int r = gp_sched_reopen(pool->sched, s->ids[i]);

			if (s->ids[i] != first) {
				pairs[at++] = (int64_t)(s->ids[i] / per);
				pairs[at++] = (int64_t)(s->ids[i] % per);
			}
			lost += r == -ESTALE;
			bad += r < 0 && r != -ESTALE;
		}
	}
	/* A complete epoch's minibatches are redone too (the schedule's
	 * redo list); only once the job is done is nothing handed out. */
	if (lost)
		gp_warn("verification: %zu minibatch(es) taken back from agent "
			"%" PRId64 " are not redone: the job is done", lost,
			rec->agent_id);
	if (bad)
		gp_warn("verification: %zu minibatch(es) taken back from agent "
			"%" PRId64 " could not be queued again (not applied, or "
			"no memory)", bad, rec->agent_id);
	v->st.lost += lost + bad;
	/* Out of the parameters: all of the effect, unless that costs over
	 * 5 % in training loss (gp_verify_take_share). The updates after it
	 * reacted to it, so that taking it all out late in a job can
	 * overshoot as far as the attack went (docs/security.md "How much
	 * of the effect comes out of the parameters"). */
	*ret_share = total ? gp_verify_take_share(v, dw) : 1.0;
	if (*ret_share < 1.0) {
		v->st.taken_in_part++;
		for (size_t i = 0; i < n; i++) {
			dw[i] *= *ret_share;
			dv[i] *= *ret_share;
		}
	}
	if (gp_params_undo(pool->params, dw, dv, n) < 0)
		gp_error("verification: cannot take agent %" PRId64 "'s "
			 "updates back", rec->agent_id);
	if (ledger && total &&
	    gp_ledger_rollback_minibatches(ledger, pool->job_id, rec->agent_id,
					   pairs, at / 2) < 0)
		gp_error("verification: cannot mark agent %" PRId64 "'s "
			 "updates rolled back: %s", rec->agent_id,
			 gp_ledger_error(ledger));
out:
	gp_verify_drop_segs(v, rec);
	free(dw);
	free(dv);
	free(pairs);
	return total;
}

size_t gp_verify_take_back(struct gp_verify *v, int64_t agent_id)
{
	struct record *rec = gp_verify_record(v, agent_id);
	double share;
	size_t n;

	if (!rec || !rec->head || !rec->head->n_ids)
		return 0;
	n = roll_back(v, rec, rec->head->ids[0], &share);
	v->st.rolled_back += n;
	return n;
}

/* A mismatch of rec's member: counted and struck, every update of its
 * kept since its last verified one taken back (first: the checked
 * update's first minibatch, whose row marks the others), revoked at
 * verify_bans. what: the log's reason; brief: the ledger's (its reason
 * column holds GP_LEDGER_REASON_MAX bytes). */
void gp_verify_mismatch(struct gp_verify *v, struct record *rec,
			uint64_t first, const char *what, const char *brief)
{
	struct gp_pool *pool = v->pool;
	struct gp_ledger *ledger = v->env.ledger;
	struct gp_member *m = gp_members_find(pool, (uint64_t)rec->agent_id);
	int64_t now = gp_now_ms();
	struct gp_ledger_rejection rej = {
		.agent_id = rec->agent_id,
		.at = now,
	};
	double share = 1.0;
	size_t undone;

	gp_verify_note_mismatch(v, rec->agent_id);
	if (m)
		gp_verify_unqualify(v, m);
	undone = roll_back(v, rec, first, &share);
	v->st.rolled_back += undone;
	if (undone && isfinite(v->share_loss[0]))
		gp_warn("agent %" PRId64 ": %s; %zu applied minibatch(es) "
			"taken back, %.0f %% of their effect out of the "
			"parameters (training loss %.4f / %.4f / %.4f with 100 / "
			"50 / 0 %% out)", rec->agent_id, what, undone,
			100.0 * share, v->share_loss[0], v->share_loss[1],
			v->share_loss[2]);
	else if (undone)
		gp_warn("agent %" PRId64 ": %s; %zu applied minibatch(es) "
			"taken back, %.0f %% of their effect out of the "
			"parameters", rec->agent_id, what, undone,
			100.0 * share);
	else
		gp_warn("agent %" PRId64 ": %s; 0 applied minibatch(es) "
			"taken back", rec->agent_id, what);
	snprintf(rej.kind, sizeof(rej.kind), "mismatch");
	snprintf(rej.reason, sizeof(rej.reason), "%s; %zu minibatch(es) "
		 "rolled back", brief, undone);
	pool->fx->ledger_rejection(pool->fx_data, &rej);
	if (ledger && gp_ledger_trust_add(ledger, rec->agent_id, 0, 1,
					  (int64_t)undone, now) < 0)
		gp_error("verification: %s", gp_ledger_error(ledger));
	if (rec->mismatches >= pool->job->verify_bans) {
		/* Revoked: it cannot come back, nothing more to check. Its
		 * updates still on their way or queued for a check may
		 * mismatch too: taken back above, but it is revoked once
		 * (counted and logged once). */
		if (rec->suspect) {
			rec->suspect = 0;
			v->suspects--;
		}
		if (!rec->revoked) {
			rec->revoked = true;
			v->st.banned++;
			gp_warn("agent %" PRId64 ": %u mismatches, revoked",
				rec->agent_id, rec->mismatches);
		}
		/* Written again at its next mismatch if it failed. */
		if (ledger && !rec->revoke_written) {
			if (gp_ledger_agent_revoke(ledger, rec->agent_id,
						   now) < 0)
				gp_error("verification: cannot revoke agent %"
					 PRId64 ": %s", rec->agent_id,
					 gp_ledger_error(ledger));
			else
				rec->revoke_written = true;
		}
		if (m)
			pool->fx->send_bye(pool->fx_data, m, GP_BYE_REVOKED,
					   "revoked: updates do not match their "
					   "recomputation");
	} else if (m && ++m->strikes >= pool->job->max_strikes) {
		pool->fx->send_bye(pool->fx_data, m, GP_BYE_PROTOCOL,
				   "too many rejected updates");
	}
}
