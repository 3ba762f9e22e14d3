#!/usr/bin/env bash
# The README's test command: install what the tests need besides the pip extras (Debian's
# chromium + chromium-driver, for the browser tests of the demo page and the error report),
# then run the whole suite offline. Arguments go to pytest: scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    if ! command -v apt-get >/dev/null \
        || ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; then
        echo "scripts/test.sh: could not install chromium and chromium-driver (apt-get); the browser tests need" \
             "them: install Chromium and a matching chromedriver on the PATH, then rerun" >&2
        exit 1
    fi
fi
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
