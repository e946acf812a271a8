#!/usr/bin/env bash
# Installs the real peers the tests talk to, when they are missing:
#   dcmtk             (storescu, echoscu, dcmsend, storescp, dcmdump)
#   orthanc           (Orthanc: the DICOMweb endpoint of the forwarding tests
#                      and of the bench's end-to-end case, and the router it
#                      is compared with)
#   orthanc-dicomweb  (its DICOMweb plugin: STOW-RS, QIDO-RS, STOW-RS client)
#   prometheus        (a real Prometheus scraping the gateway, and promtool:
#                      the alert rules' checks and unit tests)
#   systemd           (systemd-analyze verify/security on the systemd unit)
#   nodejs, npm       (dcmjs-dimse, a second storage commitment SCU, and
#                      playwright-core, which drives the browser of the
#                      console tests, from the npm registry into
#                      conformance/node/node_modules with `npm ci`:
#                      conformance/node/package-lock.json; playwright-core
#                      downloads no browser)
#   chromium          (the browser of the console tests, driven headless)
#   apache2-utils     (htpasswd: the console tests' users file is written
#                      by it, as an administrator would)
# and helm (the Helm chart's lint and render tests), built with
# `go install helm.sh/helm/v3/cmd/helm@HELM_VERSION` into $(go env GOPATH)/bin
# when it is neither in $PATH nor there (about 3.5 minutes on a fresh
# 2-CPU machine, download included; seconds once built).
# Uses apt-get as root, or through sudo; otherwise says which packages to
# install and fails.
set -euo pipefail

# tool (or file) the tests use -> Debian package that provides it
requirements=(
  "storescu:dcmtk" "echoscu:dcmtk" "dcmsend:dcmtk" "storescp:dcmtk" "dcmdump:dcmtk"
  "/usr/sbin/Orthanc:orthanc"
  "/usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb"
  "prometheus:prometheus" "promtool:prometheus"
  "systemd-analyze:systemd"
  "node:nodejs" "npm:npm"
  "/usr/bin/chromium:chromium" "htpasswd:apache2-utils"
)

HELM_VERSION=${HELM_VERSION:-v3.16.3}

install_helm() {
  if command -v helm >/dev/null 2>&1; then
    return 0
  fi
  local gobin
  gobin="$(go env GOBIN)"
  [ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
  if [ -x "$gobin/helm" ]; then
    return 0
  fi
  echo "install-test-deps: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (into $gobin)" >&2
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}
install_helm

need=()
for req in "${requirements[@]}"; do
  tool=${req%%:*} pkg=${req#*:}
  if [[ $tool == /* ]]; then
    [ -e "$tool" ] || need+=("$pkg")
  else
    command -v "$tool" >/dev/null 2>&1 || need+=("$pkg")
  fi
done

# The npm packages of the conformance tests, when node_modules is missing
# or older than the lock file.
install_npm() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/conformance/node"
  if [ -d "$dir/node_modules/dcmjs-dimse" ] && [ -d "$dir/node_modules/playwright-core" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    return 0
  fi
  echo "install-test-deps: npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
}

if [ ${#need[@]} -eq 0 ]; then
  install_npm
  exit 0
fi

# Deduplicate.
mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
echo "install-test-deps: installing ${pkgs[*]}" >&2

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-test-deps: the tests need these Debian packages: ${pkgs[*]}" >&2
  echo "install-test-deps: run as root, or with sudo: apt-get update && apt-get install -y ${pkgs[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}"
install_npm
