/* Long-term identity keys (X25519) of the coordinator and of each agent,
 * kept in a small file of mode 0600.
 *
 * File layout (48 bytes):
 *   offset 0   8  magic "GPKEY" 0x00 0x01 0x00 (version 1)
 *   offset 8  32  X25519 private key
 *   offset 40  8  BLAKE2b-64 of bytes 0..39 (detects truncation and bit rot)
 * The public key is derived from the private one on load. */
#ifndef GP_IDENTITY_H
#define GP_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define GP_IDENTITY_FILE_SIZE 48
#define GP_KEY_SIZE 32
/* "xxxx-xxxx-xxxx-xxxx": 16 hex digits of BLAKE2b(public key), grouped. */
#define GP_FINGERPRINT_LEN 19

struct gp_identity {
	uint8_t *private_key; /* GP_KEY_SIZE bytes in sodium_malloc'd memory */
	uint8_t public_key[GP_KEY_SIZE];
};

/* Creates a new key pair and writes it to path with mode 0600. Never
 * overwrites: an existing path is -EEXIST. *ret is returned-and-owned-by-
 * caller (gp_identity_destroy). On failure err (borrowed, errlen bytes) holds
 * a sentence naming the file and the problem. */
int gp_identity_create_file(const char *path, struct gp_identity **ret,
			    char *err, size_t errlen);

/* Loads a key file. Refuses, with a clear sentence in err: a missing file
 * (-ENOENT), one readable or writable by group or others (-EACCES: "mode
 * 0644 is too open, want 0600"), a file of the wrong size or with a bad
 * magic or checksum (-EBADMSG). */
int gp_identity_load(const char *path, struct gp_identity **ret, char *err,
		     size_t errlen);

/* Parses the bytes of a key file, data[0..len) (borrowed), named name in
 * messages. On success *ret is owned by the caller (gp_identity_destroy);
 * on failure err (borrowed, errlen bytes) says what is wrong: the wrong
 * size, a bad magic or checksum (-EBADMSG), or -ENOMEM. gp_identity_load()
 * is this over the file's contents. */
int gp_identity_parse(const uint8_t *data, size_t len, const char *name,
		      struct gp_identity **ret, char *err, size_t errlen);

/* Loads path if it exists, else creates it. */
int gp_identity_load_or_create(const char *path, struct gp_identity **ret,
			       char *err, size_t errlen);

/* Wipes and frees; NULL is a no-op. */
void gp_identity_destroy(struct gp_identity *id);

/* Derives a 32-byte subkey of the private key for one purpose, so that a
 * state directory holds a single secret: BLAKE2b-256 keyed with the private
 * key, personalised with purpose (at most 16 bytes, e.g. "gp-token-hash").
 * Returns 0 or -EINVAL for a purpose too long. out is written on success. */
int gp_identity_derive_key(const struct gp_identity *id, const char *purpose,
			   uint8_t out[GP_KEY_SIZE]);

/* Writes the human fingerprint of a public key (GP_FINGERPRINT_LEN chars and
 * a NUL) into out. */
void gp_identity_fingerprint(const uint8_t public_key[GP_KEY_SIZE],
			     char out[GP_FINGERPRINT_LEN + 1]);

#endif
