#!/usr/bin/env bash
# Installs, once, a real VS Code workbench for the end-to-end tests: code-server 4.96.4 (VS Code 1.96.4,
# the last release whose engines accept Node 20) from the npm registry, with its postinstall redone by
# hand so that nothing is fetched from GitHub, plus Debian's chromium (driven by the project's
# playwright-core). A copy of the tested recipe in ../shared/tools/vscode-workbench/setup.sh.
#
# Idempotent and cached: everything lands in $E2E_CACHE (default <repo>/.e2e-cache, git-ignored);
# a finished install leaves a stamp, and a second run only checks it (well under a second).
# Needs Node 20 with headers in /usr/include/node, python3, make, g++ (node-gyp builds argon2,
# node-pty, spdlog, kerberos); as root it apt-get installs what is missing.
#
# env: E2E_CACHE=<folder>  SKIP_APT=1 (never call apt-get)
# stdout: one line, the code-server folder (…/node_modules/code-server); progress goes to stderr.
set -euo pipefail

CS_VERSION=4.96.4
PROXY_AGENT_SHA=0803e0a7d1249bcb64ae9d256d0ee732b7246ea5
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${E2E_CACHE:-$REPO/.e2e-cache}
DEST="$CACHE/code-server-$CS_VERSION"
STAMP="$DEST/.ready"
log() { echo "[e2e-setup] $*" >&2; }
# shellcheck source=../apt-missing.sh
. "$REPO/test/apt-missing.sh"

mkdir -p "$CACHE"
exec 9>"$CACHE/.setup.lock"
flock 9   # one installer at a time; a second waits, then finds the stamp

# ---- Debian packages ---------------------------------------------------------------------------------
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v rg >/dev/null || missing+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
command -v zip >/dev/null || missing+=(zip)
apt_install_missing ${missing[@]+"${missing[@]}"}
test -f /usr/include/node/node_api.h || { log "Node headers missing: /usr/include/node/node_api.h (node-gyp cannot download them offline)"; exit 1; }

if [ -f "$STAMP" ] && [ -x "$DEST/node_modules/.bin/code-server" ]; then
  echo "$DEST/node_modules/code-server"
  exit 0
fi

# ---- code-server, built in a scratch folder and moved into place when complete ------------------------
T0=$(date +%s)
WORK="$DEST.partial"
rm -rf "$WORK" "$DEST"
mkdir -p "$WORK"
export npm_config_cache="$CACHE/npm-cache"   # private npm cache: a re-install after a wipe of $DEST is offline-fast
export npm_config_nodedir=/usr               # node-gyp: use the installed Node headers, never download them
export npm_config_update_notifier=false npm_config_audit=false npm_config_fund=false npm_config_loglevel=error
cd "$WORK"
echo '{ "name": "peft-lab-e2e-workbench", "version": "0.0.0", "private": true }' > package.json

log "npm install --ignore-scripts code-server@$CS_VERSION"
npm install --ignore-scripts --no-audit --no-fund "code-server@$CS_VERSION" >&2

log "build argon2 from source (its prebuilt download is on GitHub)"
npm rebuild argon2 > "$WORK/rebuild-argon2.log" 2>&1 || { tail -30 "$WORK/rebuild-argon2.log" >&2; exit 1; }
test -f node_modules/argon2/lib/binding/napi-v3/argon2.node

VSC="$WORK/node_modules/code-server/lib/vscode"
cd "$VSC"
log "lib/vscode: @vscode/proxy-agent from the registry instead of GitHub (same sha512), npm install"
sed -i "s#\"resolved\": \"git+ssh://git@github.com/microsoft/vscode-proxy-agent.git\#$PROXY_AGENT_SHA\"#\"resolved\": \"https://registry.npmjs.org/@vscode/proxy-agent/-/proxy-agent-0.27.0.tgz\"#" npm-shrinkwrap.json
if grep -q 'git+ssh\|git+https\|codeload' npm-shrinkwrap.json; then log "git dependencies left in lib/vscode/npm-shrinkwrap.json"; exit 1; fi
npm install --omit=dev --ignore-scripts --no-audit --no-fund >&2

log "lib/vscode: Debian's ripgrep, then build the native modules"
mkdir -p node_modules/@vscode/ripgrep/bin
cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
npm rebuild --foreground-scripts > "$WORK/rebuild-vscode.log" 2>&1 || { tail -50 "$WORK/rebuild-vscode.log" >&2; exit 1; }

log "lib/vscode: postinstall links + built-in extensions' dependencies"
rm -rf node_modules.asar && ln -s node_modules node_modules.asar
(cd bin/remote-cli && rm -f code-server && ln -s code-linux.sh code-server)
(cd bin/helpers && rm -f browser.sh && ln -s browser-linux.sh browser.sh)
(cd extensions && npm install --omit=dev --no-audit --no-fund > "$WORK/extensions-install.log" 2>&1) || { tail -30 "$WORK/extensions-install.log" >&2; exit 1; }

log "smoke test of the native modules"
node -e "
const r = require('module').createRequire('$VSC/package.json');
for (const m of ['node-pty', '@vscode/spdlog', 'native-watchdog', 'kerberos', '@parcel/watcher', '@vscode/ripgrep']) r(m);
require('$WORK/node_modules/argon2');
" >&2
"$WORK/node_modules/.bin/code-server" --version >&2

cd "$CACHE"
mv "$WORK" "$DEST"
date -u +%FT%TZ > "$STAMP"
log "installed code-server $CS_VERSION in $(( $(date +%s) - T0 ))s"
echo "$DEST/node_modules/code-server"
