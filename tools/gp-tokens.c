/* gp-tokens: turns text into byte-level token files (kernels/tokens.h),
 * a training file and a held-out one.
 *
 *   gp-tokens [--every N] OUT_DIR [PATH...]
 *
 * Each PATH is a file or a directory (its regular files in name order;
 * symbolic links and fortune's *.dat indexes are skipped). The default is
 * Debian's fortunes corpus, /usr/share/games/fortunes (package
 * `fortunes`). A file is cut into documents at lines that hold only "%"
 * (the fortune format; a file without them is one document), documents
 * are numbered in order over all files, and every N-th (the default 10:
 * documents 9, 19, 29, ...) goes to the held-out file, the others to the
 * training file, each followed by its "%" line. The result depends on the
 * input bytes only: OUT_DIR/train.tok and OUT_DIR/test.tok. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokens.h"

#define DEFAULT_CORPUS "/usr/share/games/fortunes"

struct stream {
	uint16_t *ids;
	size_t len, cap;
};

struct split {
	struct stream train, test;
	unsigned every;
	size_t docs, files;
};

static int push(struct stream *s, const char *p, size_t n)
{
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 1 << 16;
		uint16_t *ids;

		while (cap < s->len + n)
			cap *= 2;
		ids = realloc(s->ids, cap * sizeof(*ids));
		if (!ids)
			return -ENOMEM;
		s->ids = ids;
		s->cap = cap;
	}
	for (size_t i = 0; i < n; i++)
		s->ids[s->len++] = (uint8_t)p[i];
	return 0;
}

/* Cuts one file's text into documents and deals them out. */
static int add_text(struct split *sp, const char *text, size_t len)
{
	size_t start = 0, at = 0;
	int r;

	sp->files++;
	while (at <= len) {
		size_t eol = at;
		bool sep;

		while (eol < len && text[eol] != '\n')
			eol++;
		sep = eol - at == 1 && text[at] == '%';
		if (sep || eol >= len) {
			size_t end = sep ? at : len;
			struct stream *s;

			if (end > start) {
				s = sp->docs % sp->every == sp->every - 1
					    ? &sp->test
					    : &sp->train;
				sp->docs++;
				if ((r = push(s, text + start, end - start)) <
					    0 ||
				    (r = push(s, "%\n", 2)) < 0)
					return r;
			}
			start = eol + 1;
		}
		at = eol + 1;
	}
	return 0;
}

static int add_file(struct split *sp, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r = 0;

	if (!f) {
		fprintf(stderr, "gp-tokens: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	for (;;) {
		size_t got;

		if (len == cap) {
			char *nb = realloc(buf, cap ? 2 * cap : 65536);

			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap = cap ? 2 * cap : 65536;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "gp-tokens: %s: read error\n", path);
		r = -EIO;
		goto out;
	}
	r = add_text(sp, buf, len);
out:
	free(buf);
	fclose(f);
	return r;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int add_path(struct split *sp, const char *path)
{
	struct stat st;
	struct dirent **list;
	int n, r = 0;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "gp-tokens: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode))
		return add_file(sp, path);
	n = scandir(path, &list, NULL, by_name);
	if (n < 0) {
		fprintf(stderr, "gp-tokens: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < n; i++) {
		char full[4096];
		struct stat fs;
		const char *name = list[i]->d_name;

		if (r == 0 && name[0] != '.' && !ends_with(name, ".dat") &&
		    (size_t)snprintf(full, sizeof(full), "%s/%s", path, name) <
			    sizeof(full) &&
		    lstat(full, &fs) == 0 && S_ISREG(fs.st_mode))
			r = add_file(sp, full);
		free(list[i]);
	}
	free(list);
	return r;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: gp-tokens [--every N] OUT_DIR [PATH...]\n"
		   "  writes OUT_DIR/train.tok and OUT_DIR/test.tok (byte "
		   "level, vocabulary 256);\n"
		   "  every N-th document (default 10) is held out; PATH "
		   "defaults to " DEFAULT_CORPUS "\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "every", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct split sp = { .every = 10 };
	char path[4096];
	int c, r = 0;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'e': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || v < 2 || v > 1000000) {
				fprintf(stderr, "gp-tokens: --every: 2 to "
						"1000000\n");
				return 2;
			}
			sp.every = (unsigned)v;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if (optind + 1 == argc)
		r = add_path(&sp, DEFAULT_CORPUS);
	for (int i = optind + 1; r == 0 && i < argc; i++)
		r = add_path(&sp, argv[i]);
	if (r < 0)
		goto out;
	if (sp.train.len < 2 || sp.test.len < 2) {
		fprintf(stderr, "gp-tokens: too little text (%zu documents)\n",
			sp.docs);
		r = -EINVAL;
		goto out;
	}
	if (mkdir(argv[optind], 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "gp-tokens: %s: %s\n", argv[optind],
			strerror(errno));
		r = -errno;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/train.tok", argv[optind]);
	if ((r = gp_tokens_write(path, 256, sp.train.ids, sp.train.len)) < 0) {
		fprintf(stderr, "gp-tokens: %s: %s\n", path, strerror(-r));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/test.tok", argv[optind]);
	if ((r = gp_tokens_write(path, 256, sp.test.ids, sp.test.len)) < 0) {
		fprintf(stderr, "gp-tokens: %s: %s\n", path, strerror(-r));
		goto out;
	}
	printf("%zu files, %zu documents: train.tok %zu tokens, test.tok %zu "
	       "tokens (1 document in %u held out)\n",
	       sp.files, sp.docs, sp.train.len, sp.test.len, sp.every);
out:
	free(sp.train.ids);
	free(sp.test.ids);
	return r < 0 ? 1 : 0;
}
