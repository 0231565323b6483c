/* Token data for language models: a stream of token ids in a small file
 * with a header, one file for training and one held out, and the windows
 * a model trains on.
 *
 * The file (little-endian, docs/models.md "Token files"):
 *
 *   offset size
 *   0      8    magic "GPTOKENS"
 *   8      4    u32 format version, 1
 *   12     4    u32 vocabulary V (2..65536): every id is below it
 *   16     4    u32 bytes a token: 1 (V <= 256) or 2
 *   20     4    u32 CRC-32 (zlib's) of the token bytes that follow
 *   24     8    u64 token count N (2..GP_TOKENS_MAX)
 *   32     N x  u8 or u16 token ids
 *
 * A byte-level file (V = 256, 1 byte a token) is the text's bytes after
 * the header. Files are untrusted input: a bad header, a count that
 * disagrees with the file's size, an id outside the vocabulary or a CRC
 * mismatch is refused with a message naming the file and the problem.
 *
 * Windows: for a context of T tokens, window k (0 <= k < (N - 1) / T) is
 * tokens [k T, k T + T] (T + 1 ids): the model reads the first T and
 * learns the last T, each the token after its position. The windows do
 * not overlap; an epoch visits them in the order the job's seed shuffles,
 * and a minibatch names them by index, as it names images. */
#ifndef GP_TOKENS_H
#define GP_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#define GP_TOKENS_MAGIC "GPTOKENS"
#define GP_TOKENS_VERSION 1
#define GP_TOKENS_HEADER 32
#define GP_TOKENS_MAX ((uint64_t)1 << 30) /* tokens in a file */
#define GP_TOKENS_VOCAB_MAX 65536

struct gp_tokens {
	uint32_t vocab;
	size_t count;
	uint16_t *ids; /* owned; count ids, each < vocab */
};

/* Decodes a token file held in memory (buf borrowed, len bytes); name is
 * used in messages only. *ret is owned by the caller
 * (gp_tokens_destroy()); on failure it is untouched and err (err_len
 * bytes, may be NULL) says why: -EPROTO wrong magic or version, -ERANGE a
 * bad vocabulary, width or count, -ENODATA truncated, -E2BIG bytes after
 * the tokens, -EBADMSG a CRC mismatch, -EDOM an id outside the
 * vocabulary, -ENOMEM. */
int gp_tokens_decode(const void *buf, size_t len, const char *name,
		     struct gp_tokens **ret, char *err, size_t err_len);

/* The same from the file at path (borrowed). */
int gp_tokens_load(const char *path, struct gp_tokens **ret, char *err,
		   size_t err_len);

/* Writes count ids (borrowed, each < vocab) as a token file at path,
 * through a temporary file that is synced and renamed, so a reader never
 * sees half a file. Returns 0 or a negative errno (-EINVAL for a bad
 * vocabulary, count or id). */
int gp_tokens_write(const char *path, uint32_t vocab, const uint16_t *ids,
		    size_t count);

/* Frees t; NULL is a no-op. */
void gp_tokens_destroy(struct gp_tokens *t);

/* Windows of a context of len tokens: (count - 1) / len, 0 for len 0. */
size_t gp_tokens_windows(const struct gp_tokens *t, size_t len);

/* Gathers windows idx[0..n) (idx NULL: 0..n-1) of a context of len
 * tokens into x (n x len floats, the ids) and labels (n x len, the next
 * ids); both caller-owned. -EINVAL for a window out of range (nothing is
 * written past the one before it). */
int gp_tokens_gather(const struct gp_tokens *t, size_t len,
		     const uint32_t *idx, size_t n, float *x,
		     int32_t *labels);

/* On the wire a window travels as its len + 1 ids, 1 byte each for a
 * model of vocabulary V <= 256, else 2 (little-endian): these are the
 * bytes of one window. */
size_t gp_tokens_window_bytes(size_t len, uint32_t vocab);

/* Packs windows idx[0..n) of a context of len tokens for a model of
 * vocabulary vocab into out (n x gp_tokens_window_bytes() bytes,
 * caller-owned). -EINVAL for a window out of range or an id of the
 * stream at or above vocab. */
int gp_tokens_pack(const struct gp_tokens *t, size_t len, uint32_t vocab,
		   const uint32_t *idx, size_t n, uint8_t *out);

/* Unpacks n packed windows (in: borrowed) into x (n x len floats) and
 * labels (n x len), as gp_tokens_gather() does. -EDOM for an id at or
 * above vocab (the bytes came from the network). */
int gp_tokens_unpack(const uint8_t *in, size_t n, size_t len,
		     uint32_t vocab, float *x, int32_t *labels);

/* A fingerprint of the stream (CRC-32 of the ids, the vocabulary and the
 * count), so that two copies can be matched. Not a security check. */
uint64_t gp_tokens_fingerprint(const struct gp_tokens *t);

#endif
