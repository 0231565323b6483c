/* Why the coordinator refused something an agent sent.
 *
 * The pure coordinator modules (ssp, params, sched) validate input that comes
 * from agents. Their checking functions return an int that is:
 *   0           accepted,
 *   > 0         rejected: one of enum gp_reason below (the input was wrong,
 *               nothing changed; the coordinator logs it, counts it, may tell
 *               the agent and may drop the connection),
 *   < 0         a negative errno (out of memory, a programming error).
 * Keeping one enum for the three modules gives the ledger and the wire a
 * single set of stable numbers: never renumber, only append. */
#ifndef GP_REASON_H
#define GP_REASON_H

enum gp_reason {
	GP_REASON_NONE = 0,
	/* ssp */
	GP_REASON_UNKNOWN_AGENT = 1,   /* no such agent id */
	GP_REASON_AGENT_DEAD = 2,      /* agent is marked dead (timed out) */
	GP_REASON_CLOCK_AHEAD = 3,     /* clock jumps ahead of the agent's */
	GP_REASON_CLOCK_BEHIND = 4,    /* clock goes back / is an old clock */
	GP_REASON_CLOCK_BOUND = 5,     /* advancing a clock it may not compute at */
	GP_REASON_STALE = 6,           /* parameters older than the bound allows */
	/* params */
	GP_REASON_SHAPE = 7,           /* wrong tensor / element count */
	GP_REASON_NONFINITE = 8,       /* NaN or Inf in a gradient */
	GP_REASON_NORM = 9,            /* gradient norm above the reject limit */
	/* sched */
	GP_REASON_UNKNOWN_MINIBATCH = 10, /* id outside every open epoch */
	GP_REASON_NOT_ASSIGNED = 11,   /* minibatch is not this agent's */
	GP_REASON_DUPLICATE = 12,      /* minibatch already applied */
	GP_REASON_LATE = 13,           /* was this agent's, taken back (timeout) */
	GP_REASON_WORK_PENDING = 14,   /* clock advance with work outstanding */
	GP_REASON_JOB_DONE = 15,       /* no more work: the last epoch is done */
	GP_REASON_GROUP = 16,          /* another minibatch of its group was refused */
};

#define GP_REASON_COUNT 17

/* Returns a short constant name for a reason ("clock-ahead"), or "unknown"
 * for a value outside the enum. The string is static. */
const char *gp_reason_str(int reason);

#endif
