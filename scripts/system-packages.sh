#!/usr/bin/env bash
# The Debian packages the tests need besides the environments: docker-compose (only to validate
# docker-compose.yml; there is no engine) and Chromium (the e2e test looks at the campaign view in
# a headless browser, tests/browser.py). Installed when missing, as root; otherwise named.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "error: the tests need Debian's ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian's ${missing[*]} (apt-get) ..."
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
