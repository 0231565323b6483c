# Shared set-up for tools/test, tools/demo and the benchmarks: installs the
# Debian packages that are missing (and only those), then configures and
# builds. Source it, then call gp_setup [BUILDDIR [MESON_ARGS...]].
# shellcheck shell=bash

GP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Everything the build, the tests and the demo need.
GP_PACKAGES=(
	build-essential pkg-config meson ninja-build clang
	libsodium-dev libuv1-dev libsqlite3-dev sqlite3 zlib1g-dev libinih-dev
	libopenblas-dev
	libjson-c-dev python3-dissononce
	# tests/integration/docclient.py computes its gradients with NumPy.
	python3-numpy python3-cryptography
	ocl-icd-opencl-dev opencl-headers libclblast-dev pocl-opencl-icd clinfo
	dataset-fashion-mnist
	# The GPT job's corpus (tools/gp-tokens turns it into token files).
	fortunes
	libsystemd-dev
	# gradpool-coordinator export --format onnx: protobuf-c and ONNX's
	# onnx.proto (libonnx-dev), from which the writer is generated; the
	# export test loads the files with PyTorch and onnx.
	libprotobuf-c-dev protobuf-c-compiler libonnx-dev
	python3-torch python3-onnx
	# The agent's local statistics page, and the headless browser that
	# tests it (suite integration).
	libmicrohttpd-dev chromium
	# Network namespaces and veth pairs of the beacon test.
	iproute2
	# tools/build-deb and the package suite: the Debian package, lintian,
	# systemd-analyze and systemd-sysusers.
	debhelper dpkg-dev fakeroot lintian systemd man-db
)

gp_log() { printf '==> %s\n' "$*" >&2; }

# gp_install_packages PKG...: apt-get installs those of PKG not yet installed.
gp_install_packages() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	gp_log "installing ${missing[*]}"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	# An old or absent package list finds nothing: update once first.
	"${sudo[@]}" apt-get update -qq
	# env after sudo: sudo drops the caller's environment.
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null
}

# gp_build BUILDDIR [MESON_ARGS...]: configures BUILDDIR once, then builds.
gp_build() {
	local dir=$1
	shift
	if [ ! -f "$GP_ROOT/$dir/build.ninja" ]; then
		gp_log "configuring $dir"
		meson setup "$GP_ROOT/$dir" "$GP_ROOT" "$@" >/dev/null
	fi
	gp_log "building $dir"
	ninja -C "$GP_ROOT/$dir" >/dev/null ||
		ninja -C "$GP_ROOT/$dir"
}

gp_setup() {
	gp_install_packages "${GP_PACKAGES[@]}"
	gp_build "${1:-build}" "${@:2}"
}
