/* Parameters down as changes (GP_CAP_PARAM_DELTA, docs/protocol.md
 * "Parameter deltas").
 *
 * For a member granted the capability the coordinator keeps a mirror: the
 * parameters as the member last decoded them, value for value (f16 of a
 * full block, or the mirror plus a delta block as the member adds it). A
 * pull then sends each changed shard as GP_DTYPE_Q8_DELTA (GP_DTYPE_Q4_DELTA
 * when the member was granted GP_CAP_Q4_DELTA: the job's param_bits = 4),
 * the change from the mirror to the parameters quantised in chunks of 64,
 * and adds the same quantised change to the mirror. What the quantisation
 * loses stays in the difference between the parameters and the mirror, so
 * the next pull sends it: error feedback kept on the coordinator, exact
 * because both ends hold the same mirror bit for bit. A pull with
 * pulled_version 0 (the session's first, one picked for verification,
 * one after RESUME) sends every shard as f16 and sets the mirror from it,
 * except the session's first to a member granted GP_CAP_ZERO_MIRROR and
 * GP_CAP_Q4_DELTA (the job's param_bits = 4, the slow-link setting): both
 * mirrors then start at zero and that pull goes as q4 changes against
 * them, a quarter of f16's bytes, whatever the link (it is not measured
 * yet); what the four bits lost of the initial parameters is owed to the
 * next pulls like any change's rounding.
 *
 * Changes go only to a member whose measured link is slower than
 * GP_DOWNLINK_SLOW_BPS: on a LAN (loopback included) the bytes they save
 * buy nothing and each pull would cost the coordinator's loop a q8
 * encoding; the mirror follows the whole blocks meanwhile.
 *
 * One mirror costs n_params floats per member. It is made at a pull that
 * sends every shard (pulled_version 0: the session's first, a
 * verification pull, the one after RESUME) unless the member's link is
 * measured fast, and only while all mirrors together stay within
 * GP_DOWNLINK_MIRRORS_BYTES; a member whose link is measured fast gives
 * its mirror back. Without one the member gets f16 blocks, as without the
 * capability. */
#ifndef GP_DOWNLINK_H
#define GP_DOWNLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "msg.h"

/* Links measured slower than this (bytes per second: 100 Mbit/s) get
 * changes; faster or unmeasured ones whole f16 blocks. */
#define GP_DOWNLINK_SLOW_BPS 12.5e6

/* The most bytes all members' mirrors may hold together: without a bound
 * 10,000 members of the main job's MLP (235k parameters) would hold
 * 9.4 GB (docs/scale-out.md: per-agent memory is bounded). 128 MiB is
 * about 140 such members, or 1,300 of the 25k-parameter model: half of
 * what robust aggregation's momenta and verification's kept effects may
 * hold (256 MiB each), since those guard the model and a mirror saves
 * only bytes (about a tenth of a slow link's, docs/performance.md).
 * tools/bench-scale at 10,000 members, verification off, robust momenta
 * and mirrors at their budgets: 773 MiB beyond the model and data. */
#define GP_DOWNLINK_MIRRORS_BYTES (UINT64_C(128) << 20)

/* Turns the n parameter blocks of a PARAM_SHARDS for m (blocks[i] shard
 * idx[i], dtype F16 and values the shard's parameters as built by the
 * caller) into delta blocks where m's mirror allows, and brings the
 * mirror to what m will decode. *ret_scratch (n_params floats or NULL)
 * holds the deltas the blocks now borrow: the caller frees it after
 * sending. Returns 0 (without memory the blocks stay f16 and the mirror
 * follows them). */
int gp_downlink_encode(struct gp_pool *pool, struct gp_member *m,
		       struct gp_msg_block *blocks, const uint32_t *idx,
		       size_t n, float **ret_scratch);

/* The core, on one run of values: delta = w - mirror into delta[0..n),
 * mirror += what a block of dtype (GP_DTYPE_Q8_DELTA or GP_DTYPE_Q4_DELTA)
 * of delta decodes to (as gp_msg_block_add() adds it on the member's
 * side, bit for bit). n counts from a block's start (its chunks of 64 are
 * the block's). */
void gp_downlink_delta(const float *w, float *mirror, float *delta, size_t n,
		       uint8_t dtype);

/* Whether m's next pull is the session's first and goes as changes
 * against a mirror of zeros (GP_CAP_ZERO_MIRROR, above). */
bool gp_downlink_first_change(const struct gp_member *m);

/* Drops m's mirror (its connection is gone, or its link is fast). */
void gp_downlink_finish(struct gp_pool *pool, struct gp_member *m);

#endif
