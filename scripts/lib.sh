# Shared by scripts/test and scripts/demo: report, fail, and install missing Debian packages.
# Sourced, not run.

say() { printf '== %s\n' "$*"; }
die() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }

apt_packages=()
need_package() { apt_packages+=("$1"); }

have_initdb() {
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

install_packages() {
    [ ${#apt_packages[@]} -eq 0 ] && return 0
    if [ -n "${FERRY_TEST_NO_INSTALL:-}" ]; then
        die "missing Debian packages: ${apt_packages[*]} (FERRY_TEST_NO_INSTALL is set; install them with apt-get)"
    fi
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "missing Debian packages ${apt_packages[*]}, and installing them needs root or sudo"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${apt_packages[*]}, and this machine has no apt-get: install them by hand"
    say "installing ${apt_packages[*]}"
    "${sudo[@]}" apt-get update -qq
    # A package's own service start is not wanted (and fails in containers): the tests start
    # what they need.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
}

