#!/usr/bin/env bash
# Builds the four Lambda functions with `sam build` (Cargo Lambda, release profile) and reports
# each function's zipped size. arm64, as deployed, when the Rust target is installed or can be
# installed; otherwise (an offline machine) for the host's x86_64, from a copy of the template.
# RELAY_LAMBDA_ARCH=x86_64 forces the fallback (to test it).
set -euo pipefail
cd "$(dirname "$0")/.."
./infra/setup-venv.sh infra
export PATH="$PWD/.venv-infra/bin:$PATH" SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=eu-central-1

template=template.yaml
arch=arm64
if [[ "${RELAY_LAMBDA_ARCH:-}" == x86_64 ]] || { ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
    && ! rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; }; then
    arch=x86_64
    # Beside template.yaml: SAM resolves each CodeUri relative to the template's folder.
    template=.template-x86_64.yaml
    sed 's/Architectures: \[arm64\]/Architectures: [x86_64]/' template.yaml > "$template"
    grep -q 'Architectures: \[x86_64\]' "$template" || { echo "could not switch the architecture" >&2; exit 1; }
    echo "the aarch64 Rust target cannot be installed here: building for x86_64 instead (deploy arm64)"
fi

echo "== sam build ($arch)"
sam build --template-file "$template" --build-dir .aws-sam/build --beta-features

echo "== zipped sizes ($arch)"
for fn in WebhookReceiverFunction MessageRouterFunction ReplySenderFunction InboxApiFunction; do
    dir=.aws-sam/build/$fn
    test -x "$dir/bootstrap" || { echo "missing $dir/bootstrap" >&2; exit 1; }
    python3 - "$dir" <<'PY'
import os, sys, zipfile, io
d = sys.argv[1]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.write(os.path.join(d, "bootstrap"), "bootstrap")
raw = os.path.getsize(os.path.join(d, "bootstrap"))
print(f"{os.path.basename(d):28s} binary {raw/1e6:5.1f} MB   zip {len(buf.getvalue())/1e6:5.2f} MB")
PY
done
