/* Identity key files: creation with mode 0600, round trip, and a clear
 * refusal (never an overwrite) for every kind of bad file. */
#include "identity.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/gp-test-identity-XXXXXX";

static void write_file(const char *path, const void *p, size_t n, int mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, p, n), (ssize_t)n);
	ASSERT_OK(fchmod(fd, mode));
	close(fd);
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	ASSERT_NOT_NULL(f);
	n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

int main(void)
{
	char path[256], bad[256], err[256];
	uint8_t a[128], b[128];
	struct gp_identity *id = NULL, *id2 = NULL;
	char fp[GP_FINGERPRINT_LEN + 1], fp2[GP_FINGERPRINT_LEN + 1];
	struct stat st;
	size_t n;

	ASSERT_NOT_NULL(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/id.key", dir);

	/* Missing file. */
	ASSERT_EQ(gp_identity_load(path, &id, err, sizeof(err)), -ENOENT);
	ASSERT(strstr(err, path) != NULL);

	/* Create: 0600, loads back to the same key. */
	ASSERT_OK(gp_identity_create_file(path, &id, err, sizeof(err)));
	ASSERT_OK(stat(path, &st));
	ASSERT_EQ(st.st_mode & 0777, 0600);
	ASSERT_EQ(st.st_size, GP_IDENTITY_FILE_SIZE);
	ASSERT_OK(gp_identity_load(path, &id2, err, sizeof(err)));
	ASSERT_MEM_EQ(id->public_key, id2->public_key, GP_KEY_SIZE);
	ASSERT_MEM_EQ(id->private_key, id2->private_key, GP_KEY_SIZE);
	gp_identity_fingerprint(id->public_key, fp);
	gp_identity_fingerprint(id2->public_key, fp2);
	ASSERT_EQ(strlen(fp), GP_FINGERPRINT_LEN);
	ASSERT_STR_EQ(fp, fp2);
	gp_identity_destroy(id2);
	id2 = NULL;

	/* Never overwrites. */
	n = read_file(path, a, sizeof(a));
	ASSERT_EQ(gp_identity_create_file(path, &id2, err, sizeof(err)),
		  -EEXIST);
	ASSERT_EQ(read_file(path, b, sizeof(b)), n);
	ASSERT_MEM_EQ(a, b, n);
	/* load_or_create loads the existing key. */
	ASSERT_OK(gp_identity_load_or_create(path, &id2, err, sizeof(err)));
	ASSERT_MEM_EQ(id->public_key, id2->public_key, GP_KEY_SIZE);
	gp_identity_destroy(id2);
	id2 = NULL;

	/* Too open. */
	ASSERT_OK(chmod(path, 0644));
	ASSERT_EQ(gp_identity_load(path, &id2, err, sizeof(err)), -EACCES);
	ASSERT(strstr(err, "0644") != NULL);
	ASSERT(strstr(err, "too open") != NULL);
	ASSERT_OK(chmod(path, 0600));

	/* Truncated, oversized, bad magic, flipped bit: each refused, the file
	 * untouched, and load_or_create does not replace it either. */
	snprintf(bad, sizeof(bad), "%s/bad.key", dir);
	write_file(bad, a, 20, 0600);
	ASSERT_EQ(gp_identity_load(bad, &id2, err, sizeof(err)), -EBADMSG);
	ASSERT(strstr(err, "truncated") != NULL);
	ASSERT_EQ(gp_identity_load_or_create(bad, &id2, err, sizeof(err)),
		  -EBADMSG);
	ASSERT_EQ(read_file(bad, b, sizeof(b)), 20);

	write_file(bad, a, 60, 0600);
	ASSERT_EQ(gp_identity_load(bad, &id2, err, sizeof(err)), -EBADMSG);

	memcpy(b, a, n);
	b[0] ^= 1;
	write_file(bad, b, n, 0600);
	ASSERT_EQ(gp_identity_load(bad, &id2, err, sizeof(err)), -EBADMSG);
	ASSERT(strstr(err, "magic") != NULL);

	memcpy(b, a, n);
	b[20] ^= 0x10;
	write_file(bad, b, n, 0600);
	ASSERT_EQ(gp_identity_load(bad, &id2, err, sizeof(err)), -EBADMSG);
	ASSERT(strstr(err, "checksum") != NULL);
	ASSERT(id2 == NULL);

	gp_identity_destroy(id);
	gp_identity_destroy(NULL);
	unlink(bad);
	unlink(path);
	rmdir(dir);
	return 0;
}
