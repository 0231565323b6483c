#include "checkpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "endian.h"

static uint64_t padded(uint64_t len)
{
	return (len + 7) & ~(uint64_t)7;
}

int gp_checkpoint_encode(const struct gp_checkpoint_section *sections,
			 size_t n, uint8_t **ret, size_t *ret_len)
{
	uint64_t area = 0;
	uint8_t *buf, *p;

	if ((!sections && n) || !ret || !ret_len ||
	    n > GP_CHECKPOINT_MAX_SECTIONS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (sections[i].tag == 0 || (!sections[i].data && sections[i].len))
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (sections[j].tag == sections[i].tag)
				return -EINVAL;
		if (sections[i].len > GP_CHECKPOINT_MAX_SIZE)
			return -E2BIG;
		area += GP_CHECKPOINT_SECTION_HEADER_SIZE +
			padded(sections[i].len);
	}
	if (area + GP_CHECKPOINT_HEADER_SIZE > GP_CHECKPOINT_MAX_SIZE)
		return -E2BIG;
	buf = calloc(1, (size_t)area + GP_CHECKPOINT_HEADER_SIZE);
	if (!buf)
		return -ENOMEM;

	p = buf + GP_CHECKPOINT_HEADER_SIZE;
	for (size_t i = 0; i < n; i++) {
		gp_put_le32(p, sections[i].tag);
		gp_put_le64(p + 8, sections[i].len);
		if (sections[i].len)
			memcpy(p + GP_CHECKPOINT_SECTION_HEADER_SIZE,
			       sections[i].data, sections[i].len);
		p += GP_CHECKPOINT_SECTION_HEADER_SIZE + padded(sections[i].len);
	}
	memcpy(buf, GP_CHECKPOINT_MAGIC, 4);
	gp_put_le16(buf + 4, GP_CHECKPOINT_VERSION);
	gp_put_le32(buf + 8, (uint32_t)n);
	gp_put_le32(buf + 12,
		    gp_crc32(buf + GP_CHECKPOINT_HEADER_SIZE, (size_t)area));
	gp_put_le64(buf + 16, area);
	gp_put_le32(buf + 28, gp_crc32(buf, 28));
	*ret = buf;
	*ret_len = (size_t)area + GP_CHECKPOINT_HEADER_SIZE;
	return 0;
}

int gp_checkpoint_decode(const uint8_t *buf, size_t len,
			 struct gp_checkpoint_section *sections, size_t *ret_n)
{
	struct gp_checkpoint_section found[GP_CHECKPOINT_MAX_SECTIONS];
	uint64_t area, off;
	uint32_t count;

	if ((!buf && len) || !sections || !ret_n)
		return -EINVAL;
	if (len < GP_CHECKPOINT_HEADER_SIZE ||
	    memcmp(buf, GP_CHECKPOINT_MAGIC, 4) != 0)
		return -EBADMSG;
	if (gp_get_le32(buf + 28) != gp_crc32(buf, 28))
		return -EBADMSG;
	if (gp_get_le16(buf + 4) != GP_CHECKPOINT_VERSION ||
	    gp_get_le16(buf + 6) != 0)
		return -ENOTSUP;
	count = gp_get_le32(buf + 8);
	area = gp_get_le64(buf + 16);
	if (gp_get_le32(buf + 24) != 0 || count > GP_CHECKPOINT_MAX_SECTIONS ||
	    area != (uint64_t)len - GP_CHECKPOINT_HEADER_SIZE)
		return -EBADMSG;
	if (gp_get_le32(buf + 12) !=
	    gp_crc32(buf + GP_CHECKPOINT_HEADER_SIZE, (size_t)area))
		return -EBADMSG;

	/* Every section header and payload must lie inside the area, and the
	 * sections must account for all of it. Lengths are compared against
	 * what remains, never added first, so nothing can overflow. */
	off = GP_CHECKPOINT_HEADER_SIZE;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t rest = (uint64_t)len - off, plen, pad;
		const uint8_t *h = buf + off;

		if (rest < GP_CHECKPOINT_SECTION_HEADER_SIZE)
			return -EBADMSG;
		rest -= GP_CHECKPOINT_SECTION_HEADER_SIZE;
		plen = gp_get_le64(h + 8);
		if (gp_get_le32(h) == 0 || gp_get_le32(h + 4) != 0 || plen > rest)
			return -EBADMSG;
		pad = padded(plen) - plen;
		if (pad > rest - plen)
			return -EBADMSG;
		for (uint64_t k = 0; k < pad; k++)
			if (h[GP_CHECKPOINT_SECTION_HEADER_SIZE + plen + k])
				return -EBADMSG;
		for (uint32_t j = 0; j < i; j++)
			if (found[j].tag == gp_get_le32(h))
				return -EBADMSG;
		found[i].tag = gp_get_le32(h);
		found[i].data = h + GP_CHECKPOINT_SECTION_HEADER_SIZE;
		found[i].len = (size_t)plen;
		off += GP_CHECKPOINT_SECTION_HEADER_SIZE + plen + pad;
	}
	if (off != len)
		return -EBADMSG;
	memcpy(sections, found, count * sizeof(found[0]));
	*ret_n = count;
	return 0;
}

const struct gp_checkpoint_section *
gp_checkpoint_find(const struct gp_checkpoint_section *sections, size_t n,
		   uint32_t tag)
{
	for (size_t i = 0; i < n; i++)
		if (sections[i].tag == tag)
			return &sections[i];
	return NULL;
}
