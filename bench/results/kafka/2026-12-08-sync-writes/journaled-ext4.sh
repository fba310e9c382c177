#!/bin/sh
# A journaled ext4 (the default mkfs.ext4) in a 30 GB sparse file on the
# data disk, loop-mounted with direct I/O (no second page cache), for
# DATA=/mnt/j4/d of run.sh. As root. The machine's own / is ext4 without a
# journal, which behaves differently for writes during an fdatasync.
set -eu
IMG=${1:-/work/j4.img}
truncate -s 30G "$IMG"
mkfs.ext4 -q -F "$IMG"
DEV=$(losetup --direct-io=on -f --show "$IMG")
mkdir -p /mnt/j4
mount -o discard "$DEV" /mnt/j4
mkdir -p /mnt/j4/d
dumpe2fs -h "$DEV" 2>/dev/null | grep -E 'features|Journal size'
