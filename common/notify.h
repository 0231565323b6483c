/* Service manager notifications (sd_notify) for both programs: READY=1 once
 * a program serves, STATUS= lines that `systemctl status` shows, WATCHDOG=1
 * pings from the event loop. Without libsystemd, or when not started by
 * systemd ($NOTIFY_SOCKET unset), every call does nothing. */
#ifndef GP_NOTIFY_H
#define GP_NOTIFY_H

#include <stdint.h>

/* Tells the service manager the program is ready (READY=1) with a status
 * line (borrowed, may be NULL). */
void gp_notify_ready(const char *status);

/* Sets the status line (borrowed). */
void gp_notify_status(const char *status);

/* One watchdog ping (WATCHDOG=1). */
void gp_notify_watchdog(void);

/* Tells the manager the program is stopping (STOPPING=1). */
void gp_notify_stopping(void);

/* The interval the manager expects pings at (WatchdogSec=), in
 * microseconds; 0 when no watchdog is set for this process. */
uint64_t gp_notify_watchdog_usec(void);

#endif
