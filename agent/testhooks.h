/* The agent's test-only knobs, in one place. They are set only from the
 * hidden command-line flags (--test-step-delay-ms, --test-fail-step) and
 * copied, unchanged, to the session and from there to the compute thread;
 * a volunteer's agent runs with every field 0. */
#ifndef GP_AGENT_TESTHOOKS_H
#define GP_AGENT_TESTHOOKS_H

struct gp_testhooks {
	/* Sleep this long after each step: a slow laptop, for the straggler
	 * tests and the benchmarks. 0: no sleep. */
	unsigned step_delay_ms;
	/* The fail_step-th minibatch a compute thread takes (counting from 1)
	 * fails with -EIO, as a transient OpenCL error (CL_OUT_OF_RESOURCES)
	 * would. The session gives it to its first compute thread only, so
	 * that it happens once per process. 0: never. */
	unsigned fail_step;
};

#endif
