# Sourced by the test setup scripts: apt_install_missing PKG... installs the Debian packages given
# (the caller lists only the missing ones) when running as root, else (or with SKIP_APT=1) fails
# with the command to run. Needs the caller's log() function.
apt_install_missing() {
  [ $# -gt 0 ] || return 0
  if [ "${SKIP_APT:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: $* (install them as root: apt-get install $*)"
    exit 1
  fi
  log "apt-get install $*"
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >&2
}
