#!/usr/bin/env bash
# Installs the real peers the tests talk to, when they are missing:
#   dcmtk             (storescu, echoscu, dcmsend, storescp, dcmdump)
#   orthanc           (Orthanc: the DICOMweb endpoint of the forwarding tests
#                      and of the bench's end-to-end case, and the router it
#                      is compared with)
#   orthanc-dicomweb  (its DICOMweb plugin: STOW-RS, QIDO-RS, STOW-RS client)
#   prometheus        (a real Prometheus scraping the gateway, and promtool)
# Uses apt-get as root, or through sudo; otherwise says which packages to
# install and fails.
set -euo pipefail

# tool (or file) the tests use -> Debian package that provides it
requirements=(
  "storescu:dcmtk" "echoscu:dcmtk" "dcmsend:dcmtk" "storescp:dcmtk" "dcmdump:dcmtk"
  "/usr/sbin/Orthanc:orthanc"
  "/usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb"
  "prometheus:prometheus" "promtool:prometheus"
)

need=()
for req in "${requirements[@]}"; do
  tool=${req%%:*} pkg=${req#*:}
  if [[ $tool == /* ]]; then
    [ -e "$tool" ] || need+=("$pkg")
  else
    command -v "$tool" >/dev/null 2>&1 || need+=("$pkg")
  fi
done

if [ ${#need[@]} -eq 0 ]; then
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
