#include "reason.h"

static const char *const names[GP_REASON_COUNT] = {
	[GP_REASON_NONE] = "none",
	[GP_REASON_UNKNOWN_AGENT] = "unknown-agent",
	[GP_REASON_AGENT_DEAD] = "agent-dead",
	[GP_REASON_CLOCK_AHEAD] = "clock-ahead",
	[GP_REASON_CLOCK_BEHIND] = "clock-behind",
	[GP_REASON_CLOCK_BOUND] = "clock-bound",
	[GP_REASON_STALE] = "stale",
	[GP_REASON_SHAPE] = "shape",
	[GP_REASON_NONFINITE] = "nonfinite",
	[GP_REASON_NORM] = "norm",
	[GP_REASON_UNKNOWN_MINIBATCH] = "unknown-minibatch",
	[GP_REASON_NOT_ASSIGNED] = "not-assigned",
	[GP_REASON_DUPLICATE] = "duplicate",
	[GP_REASON_LATE] = "late",
	[GP_REASON_WORK_PENDING] = "work-pending",
	[GP_REASON_JOB_DONE] = "job-done",
	[GP_REASON_GROUP] = "group",
};

const char *gp_reason_str(int reason)
{
	if (reason < 0 || reason >= GP_REASON_COUNT || !names[reason])
		return "unknown";
	return names[reason];
}
