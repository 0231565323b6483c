/* proto/beacon: the byte layout, round trips and what is refused. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "beacon.h"
#include "test.h"

int main(void)
{
	struct gp_beacon b = { .port = 7100, .sent_at = 0x0102030405060708ull },
			 back;
	uint8_t buf[GP_BEACON_SIZE + 8];
	static const uint8_t head[16] = { 'G', 'P', 'b', 'c', 1, 0, 0x1b, 0xbc,
					  1, 2, 3, 4, 5, 6, 7, 8 };

	for (int i = 0; i < GP_BEACON_KEY_SIZE; i++)
		b.key[i] = (uint8_t)(0xa0 + i);
	ASSERT_EQ(gp_beacon_encode(&b, buf), GP_BEACON_SIZE);
	ASSERT_MEM_EQ(buf, head, sizeof(head));
	ASSERT_MEM_EQ(buf + 16, b.key, GP_BEACON_KEY_SIZE);

	ASSERT_OK(gp_beacon_decode(buf, GP_BEACON_SIZE, &back));
	ASSERT_EQ(back.port, 7100);
	ASSERT_UINT_EQ(back.sent_at, 0x0102030405060708ull);
	ASSERT_MEM_EQ(back.key, b.key, GP_BEACON_KEY_SIZE);

	/* Later versions may append fields; flags bits are ignored. */
	memset(buf + GP_BEACON_SIZE, 0xee, 8);
	buf[5] = 0x80;
	ASSERT_OK(gp_beacon_decode(buf, sizeof(buf), &back));
	buf[5] = 0;

	/* Refused, and *ret untouched. */
	memset(&back, 0x55, sizeof(back));
	ASSERT_EQ(gp_beacon_decode(buf, GP_BEACON_SIZE - 1, &back), -EBADMSG);
	buf[0] = 'g';
	ASSERT_EQ(gp_beacon_decode(buf, GP_BEACON_SIZE, &back), -EBADMSG);
	buf[0] = 'G';
	buf[4] = 2;
	ASSERT_EQ(gp_beacon_decode(buf, GP_BEACON_SIZE, &back), -EBADMSG);
	buf[4] = 1;
	buf[6] = buf[7] = 0;
	ASSERT_EQ(gp_beacon_decode(buf, GP_BEACON_SIZE, &back), -EBADMSG);
	ASSERT_EQ(gp_beacon_decode(NULL, 0, &back), -EBADMSG);
	ASSERT_EQ(back.port, 0x5555);
	b.port = 0;
	ASSERT_EQ(gp_beacon_encode(&b, buf), -EINVAL);
	printf("beacon: all tests passed\n");
	return 0;
}
