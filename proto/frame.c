#include "frame.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"

static bool kind_valid(unsigned kind)
{
	return kind == GP_FRAME_HANDSHAKE || kind == GP_FRAME_TRANSPORT ||
	       kind == GP_FRAME_REFUSE;
}

void gp_frame_decoder_init(struct gp_frame_decoder *d, uint32_t max_body)
{
	memset(d, 0, sizeof(*d));
	if (max_body == 0 || max_body > GP_FRAME_MAX_BODY)
		max_body = GP_FRAME_MAX_BODY;
	d->max_body = max_body;
}

void gp_frame_decoder_finish(struct gp_frame_decoder *d)
{
	if (!d)
		return;
	free(d->buf);
	d->buf = NULL;
	d->buf_cap = 0;
}

void gp_frame_decoder_trim(struct gp_frame_decoder *d)
{
	if (d->buf && d->header_have == 0 && d->body_have == 0)
		gp_frame_decoder_finish(d);
}

size_t gp_frame_decoder_pending(const struct gp_frame_decoder *d)
{
	return d->header_have + d->body_have;
}

/* Checks a complete header. The length test comes first and needs nothing
 * but the five header bytes: an oversized frame is refused before any of
 * its body is read, stored or allocated for. */
static int header_check(struct gp_frame_decoder *d)
{
	uint32_t len = gp_get_le32(d->header);

	if (len > d->max_body)
		return -EMSGSIZE;
	if (!kind_valid(d->header[4]))
		return -EPROTO;
	d->body_len = len;
	d->body_have = 0;
	return 0;
}

static void emit(struct gp_frame_decoder *d, uint8_t *body,
		 struct gp_frame *ret_frame)
{
	ret_frame->kind = (enum gp_frame_kind)d->header[4];
	ret_frame->body = body;
	ret_frame->len = d->body_len;
	d->header_have = 0;
	d->body_have = 0;
	d->body_len = 0;
}

int gp_frame_decode(struct gp_frame_decoder *d, uint8_t *data, size_t len,
		    size_t *ret_used, struct gp_frame *ret_frame)
{
	size_t used = 0;
	int r;

	if (d->error)
		return d->error;

	/* Header, possibly spread over several inputs. */
	if (d->header_have < GP_FRAME_HEADER_SIZE) {
		size_t n = GP_FRAME_HEADER_SIZE - d->header_have;

		if (n > len)
			n = len;
		memcpy(d->header + d->header_have, data, n);
		d->header_have += n;
		used += n;
		if (d->header_have < GP_FRAME_HEADER_SIZE) {
			*ret_used = used;
			return 0;
		}
		r = header_check(d);
		if (r < 0) {
			d->error = r;
			return r;
		}
	}

	/* The whole body is in this input and none of it was buffered
	 * before: hand it out in place. This is the common case for large
	 * reads and costs no copy. */
	if (d->body_have == 0 && len - used >= d->body_len) {
		emit(d, data + used, ret_frame);
		*ret_used = used + ret_frame->len;
		return 1;
	}

	/* The body is split: gather it in the decoder's buffer, whose size is
	 * bounded by the already checked length. */
	if (d->buf_cap < d->body_len) {
		uint8_t *nb = realloc(d->buf, d->body_len);

		if (!nb) {
			d->error = -ENOMEM;
			return -ENOMEM;
		}
		d->buf = nb;
		d->buf_cap = d->body_len;
	}
	{
		size_t n = d->body_len - d->body_have;

		if (n > len - used)
			n = len - used;
		memcpy(d->buf + d->body_have, data + used, n);
		d->body_have += n;
		used += n;
	}
	if (d->body_have < d->body_len) {
		*ret_used = used;
		return 0;
	}
	emit(d, d->buf, ret_frame);
	*ret_used = used;
	return 1;
}

int gp_frame_header_write(uint8_t out[GP_FRAME_HEADER_SIZE],
			  enum gp_frame_kind kind, size_t len)
{
	if (len > GP_FRAME_MAX_BODY)
		return -EMSGSIZE;
	if (!kind_valid((unsigned)kind))
		return -EINVAL;
	gp_put_le32(out, (uint32_t)len);
	out[4] = (uint8_t)kind;
	return 0;
}
