#!/usr/bin/env bash
# Make sure Chromium (headless browser for the test report page check) is installed.
# As root it is installed from Debian packages; otherwise the exact command is printed.
# The tests that need it skip with this hint when it is missing.
set -euo pipefail
for browser in chromium chromium-browser google-chrome; do
  command -v "$browser" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium.sh: installing chromium with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
else
  echo "chromium is missing; install it with: sudo apt-get install -y chromium" >&2
  echo "(the browser checks of the test report page are skipped without it)" >&2
fi
