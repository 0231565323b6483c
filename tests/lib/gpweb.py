"""Pages in headless Chromium for the tests with real processes: the
agent's page, the owner's page, the leaderboard. Screenshots go next to
the test logs of the build under test (meson-logs/), or $GP_SHOTS."""
import os
import shutil
import subprocess

from gppool import check, log


def chromium():
    """The chromium binary, installed from Debian (under the tests' apt
    lock) when missing and running as root; None when there is none."""
    path = shutil.which("chromium")
    if not path and os.geteuid() == 0:
        subprocess.run("flock /tmp/gp-apt.lock env DEBIAN_FRONTEND="
                       "noninteractive apt-get install -y -qq "
                       "--no-install-recommends chromium >/dev/null 2>&1",
                       shell=True)
        path = shutil.which("chromium")
    return path


def shots_dir(binary):
    """Where screenshots go: $GP_SHOTS, else meson-logs/ of the build
    directory that holds binary (build/agent/gradpool-agent)."""
    d = os.environ.get("GP_SHOTS") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(binary))),
        "meson-logs")
    os.makedirs(d, exist_ok=True)
    return d


def _argv(browser, tmp):
    return [browser, "--headless", "--disable-gpu", "--no-sandbox",
            "--no-first-run", "--user-data-dir=" +
            os.path.join(tmp, "chromium")]


def dump_dom(browser, url, tmp):
    """The DOM Chromium built from url, as text; fails the test unless it
    loaded an HTML page."""
    r = subprocess.run(_argv(browser, tmp) + ["--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "<html" in r.stdout,
          "chromium could not load %s: %s" % (url, r.stderr[-2000:]))
    return r.stdout


def shot(browser, url, tmp, path, size="1100,1650"):
    """A screenshot of url into path; fails the test unless Chromium drew
    something (a blank page is a few hundred bytes)."""
    r = subprocess.run(_argv(browser, tmp) + [
        "--hide-scrollbars", "--window-size=" + size, "--screenshot=" + path,
        url], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and os.path.exists(path) and
          os.path.getsize(path) > 10000,
          "no screenshot %s: %s" % (path, r.stderr[-2000:]))
    log("screenshot %s" % path)
