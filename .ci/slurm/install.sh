#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM test cluster (SLURM 22.05 on bookworm).
# Run as root. Idempotent: does nothing when the packages are already there.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "slurm packages already installed: ${packages[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must run as root to apt-get install ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: the packages' postinst must not try to start services (no systemd in CI
# containers); start.sh runs the daemons itself.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
fi
echo "installed: ${missing[*]} ($(dpkg-query -W -f='${Version}' slurmctld))"
