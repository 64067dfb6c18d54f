#!/usr/bin/env bash
# Makes the web inbox's screenshots in docs/img (PNG, 1024×768, headless Chromium): the
# browser test takes them at its main screens when RELAY_SCREENSHOTS names a directory.
#   ./infra/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./infra/setup-debian.sh chromium
RELAY_SCREENSHOTS="$PWD/docs/img" cargo test -p relay --test inbox --locked \
    staff_answer_customers_in_a_real_browser
ls -l docs/img/*.png
