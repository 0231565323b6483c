#include "notify.h"

#include <stdio.h>

#include "gp-config.h"

#if GP_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

void gp_notify_ready(const char *status)
{
	if (status)
		sd_notifyf(0, "READY=1\nSTATUS=%s", status);
	else
		sd_notify(0, "READY=1");
}

void gp_notify_status(const char *status)
{
	if (status)
		sd_notifyf(0, "STATUS=%s", status);
}

void gp_notify_watchdog(void)
{
	sd_notify(0, "WATCHDOG=1");
}

void gp_notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

uint64_t gp_notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec;
}
#else
void gp_notify_ready(const char *status)
{
	(void)status;
}

void gp_notify_status(const char *status)
{
	(void)status;
}

void gp_notify_watchdog(void)
{
}

void gp_notify_stopping(void)
{
}

uint64_t gp_notify_watchdog_usec(void)
{
	return 0;
}
#endif
