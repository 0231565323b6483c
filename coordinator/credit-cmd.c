/* `gradpool-coordinator credits` and `leaderboard`: the owner's view of
 * each member's credit, the check of the credit table against the update
 * log, and the static page the owner publishes (credit.h). */
#include "credit-cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "credit.h"
#include "log.h"
#include "state.h"

struct credit_options {
	const char *state;
	const char *html;
	const char *title;
	bool json, check, fix, omit_anonymous, fingerprints;
};

static void usage(FILE *f)
{
	fputs("usage: gradpool-coordinator credits [--json]\n"
	      "       gradpool-coordinator credits --check [--fix]\n"
	      "       gradpool-coordinator credits --html OUT [--title TEXT]\n"
	      "                 [--omit-anonymous] [--fingerprints]\n"
	      "       gradpool-coordinator leaderboard OUT [--title TEXT] ...\n"
	      "\n"
	      "  --json            members, public names, credit, updates as JSON\n"
	      "  --check           compare the credit table with the update log\n"
	      "  --fix             with --check: rebuild it from the log\n"
	      "  --html OUT        write the page to publish (public names only)\n"
	      "  --title TEXT      the page's title\n"
	      "  --omit-anonymous  leave out members without a public name\n"
	      "  --fingerprints    show members' key fingerprints on the page\n"
	      "  --state DIR       the coordinator's state\n",
	      f);
}

static int parse(int argc, char **argv, struct credit_options *o)
{
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'J' },
		{ "check", no_argument, NULL, 'c' },
		{ "fix", no_argument, NULL, 'f' },
		{ "html", required_argument, NULL, 'H' },
		{ "title", required_argument, NULL, 't' },
		{ "omit-anonymous", no_argument, NULL, 'o' },
		{ "fingerprints", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->state = optarg;
			break;
		case 'J':
			o->json = true;
			break;
		case 'c':
			o->check = true;
			break;
		case 'f':
			o->fix = true;
			break;
		case 'H':
			o->html = optarg;
			break;
		case 't':
			o->title = optarg;
			break;
		case 'o':
			o->omit_anonymous = true;
			break;
		case 'F':
			o->fingerprints = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	return 0;
}

/* Writes the page to a temporary file beside out, readable by all (it is
 * meant to be published), flushed, then renamed over out. Returns 0 or a
 * negative errno (logged). */
static int write_page(const char *out, const struct gp_credit_member *m,
		      size_t n, const struct gp_credit_page *page)
{
	char *dir_copy = strdup(out), *tmp = NULL;
	FILE *f = NULL;
	bool made = false;
	int fd = -1, r;

	if (!dir_copy || asprintf(&tmp, "%s/.leaderboard.XXXXXX",
				  dirname(dir_copy)) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	made = fd >= 0;
	if (fd < 0 || fchmod(fd, 0644) < 0 || !(f = fdopen(fd, "w"))) {
		r = -errno;
		goto fail;
	}
	fd = -1;
	r = gp_credit_write_html(f, m, n, page);
	if (r >= 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0))
		r = -errno;
	if (fclose(f) != 0 && r >= 0)
		r = -errno;
	f = NULL;
	if (r >= 0 && rename(tmp, out) < 0)
		r = -errno;
	if (r < 0)
		goto fail;
	goto out;
fail:
	gp_error("cannot write %s: %s", out, strerror(r < 0 ? -r : EIO));
	if (made)
		unlink(tmp);
out:
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(dir_copy);
	return r;
}

static int check(struct gp_coord_state *st, bool fix)
{
	int64_t bad = 0;
	int r;

	r = gp_ledger_credit_check(st->ledger, fix, &bad);
	if (r < 0) {
		gp_error("%s: %s", st->ledger_path, gp_ledger_error(st->ledger));
		return r;
	}
	if (bad == 0)
		printf("credit: the table agrees with the update log\n");
	else
		printf("credit: %lld member-job totals differed from the update "
		       "log%s\n", (long long)bad,
		       fix ? "; rebuilt from the log" :
			     " (run credits --check --fix to rebuild them)");
	return bad && !fix ? -EUCLEAN : 0;
}

int gp_credit_command(const char *default_state, bool leaderboard, int argc,
		      char **argv)
{
	struct credit_options o = { 0 };
	struct gp_coord_state st;
	struct gp_credit_member *m = NULL;
	size_t n = 0;
	int r;

	if (parse(argc, argv, &o) < 0)
		return -EINVAL;
	if (leaderboard) {
		if (optind + 1 != argc || o.html) {
			gp_error("leaderboard: give one file to write "
				 "(leaderboard OUT.html)");
			return -EINVAL;
		}
		o.html = argv[optind];
	} else if (optind != argc) {
		gp_error("credits: unexpected '%s'", argv[optind]);
		return -EINVAL;
	}
	if (o.fix && !o.check) {
		gp_error("credits: --fix goes with --check");
		return -EINVAL;
	}
	if (!o.state)
		o.state = default_state;
	r = gp_coord_state_open(&st, o.state,
				o.fix ? 0 : GP_LEDGER_READONLY | GP_LEDGER_CHECK);
	if (r < 0)
		return r;
	if (o.check) {
		r = check(&st, o.fix);
		goto out;
	}
	r = gp_credit_members(st.ledger, NULL, 0, &m, &n);
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	if (o.html) {
		struct gp_credit_page page = {
			.title = o.title,
			.generated_at = (int64_t)time(NULL),
			.omit_anonymous = o.omit_anonymous,
			.fingerprints = o.fingerprints,
		};

		r = write_page(o.html, m, n, &page);
		if (r >= 0)
			gp_info("wrote %s", o.html);
	} else if (o.json) {
		gp_credit_write_json(stdout, m, n);
	} else {
		gp_credit_write_text(stdout, m, n);
	}
out:
	gp_credit_members_free(m, n);
	gp_coord_state_close(&st);
	return r;
}
