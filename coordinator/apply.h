/* What an UPDATE does: the one path every update takes.
 *
 * An update answers a group of minibatches of the agent's current clock:
 * GP_UPDATE_SUMS lists them (items) and carries two sums per tensor,
 * GP_UPDATE_DELTA lists them and carries the run's parameter change, the
 * plain form answers one (a group of one) and carries its gradient. The
 * path: each minibatch's own check (known, this agent's, not done, not
 * twice in the group), the message's shape (sums only with GP_CAP_SUMS,
 * a delta only with GP_CAP_INNER_ADAMW, no parts > 1, the current clock,
 * no more minibatches than it has open), SSP's staleness bound, room in
 * the ledger's buffer for the rows, the blocks, then the optimiser step
 * (gp_params_apply_scaled for one, gp_params_apply_sums for a group,
 * gp_params_apply_delta for a delta) with the staleness scale and
 * clipping, through the outer optimiser when the job has one (params.h).
 * The group is applied or refused whole, with one ledger row per
 * minibatch. A refused minibatch goes back to the queue; a refusal that
 * is the agent's fault counts one strike per message, and max_strikes of
 * them close the connection. */
#ifndef GP_APPLY_H
#define GP_APPLY_H


#include <stdint.h>

#include "msg.h"
#include "pool.h"

/* Applies or refuses update u (borrowed) from member m (borrowed),
 * received at `received` (ms, wall clock). Returns 0 when applied, a
 * GP_REASON_* when refused or discarded, -ENOBUFS when put back for a
 * full ledger buffer (no strike, no row). */
int gp_apply_update(struct gp_pool *pool, struct gp_member *m,
		    const struct gp_msg_update *u, int64_t received);

/* The factor an update of m's is scaled by for staleness (1 when none
 * applies): k / (k + u), k the agent's minibatches at this clock and u
 * the updates its copy lacks. */
double gp_apply_staleness_scale(const struct gp_pool *pool,
				const struct gp_member *m);

#endif
