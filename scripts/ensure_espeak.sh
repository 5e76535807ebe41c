#!/usr/bin/env bash
# Make sure espeak-ng (speech for the offline demo corpus) is installed.
# As root it is installed from Debian/Ubuntu packages; otherwise the exact command is printed.
set -euo pipefail
command -v espeak-ng >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_espeak.sh: installing espeak-ng with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >&2
else
  echo "espeak-ng is missing; install it with: sudo apt-get install -y espeak-ng" >&2
  exit 1
fi
