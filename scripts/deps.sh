#!/bin/sh
# Installs what building, booting and testing ingot needs on a Debian/Ubuntu host, and nothing
# the host already has. Idempotent and quick when nothing is missing. Never touches /boot or the
# host's network configuration: kernels and target-arch libraries are downloaded into the cache by
# `ingot build` / `ingot fetch`, not installed. (fdisk: its sfdisk checks the ISO's hybrid GPT in
# the tests.)
set -eu

pkgs="qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 gcc gcc-aarch64-linux-gnu
libc6-dev libc6-dev-arm64-cross libseccomp-dev dpkg e2fsprogs squashfs-tools ca-certificates fdisk"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

echo "make deps: installing:$missing"
sudo=""
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { echo "make deps: need root (or sudo) to install:$missing" >&2; exit 1; }
	sudo=sudo
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
