/* The OpenCL entry points for builds without OpenCL/CLBlast: no device is
 * listed and creating a backend fails with -ENODEV, so callers need no
 * #ifdef. */
#include "backend-impl.h"

#include <errno.h>

int gp_opencl_list_devices(struct gp_device_info **list, size_t *n)
{
	(void)list;
	(void)n;
	return 0;
}

int gp_opencl_create(int device_index, struct gp_backend **ret)
{
	(void)device_index;
	(void)ret;
	gp_backend_set_create_error("built without OpenCL support");
	return -ENODEV;
}
