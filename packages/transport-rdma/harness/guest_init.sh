#!/bin/sh
# The guest side of the RDMA harness, run as PID 1 (exec'd by the image's /sbin/tw-init from
# the per-run job share, /tw-job). It attaches Soft-RoCE, runs /tw-job/job.sh as the test,
# prints the test's exit code behind a per-run marker on the serial console and powers off.
#
# /tw-job/env.sh (written by run_vm.py) sets:
#   TW_NONCE    marker nonce, so nothing the test prints can be mistaken for the result
#   TW_SHARES   "tag:path ..." host folders to mount read-only at the same absolute path
#   TW_NET      "dummy" (rxe on a dummy NIC, single guest) or "wire" (rxe on the virtio NIC)
#   TW_ADDR     IPv4 address/prefix of the NIC rxe runs on
set -u
. /tw-job/env.sh

log() { echo "tw-guest: $*"; }
finish() {
    echo "TW-RDMA-EXIT-$TW_NONCE=$1"
    echo "$1" > /tw-job/exit_code 2>/dev/null
    sync
    echo o > /proc/sysrq-trigger
    sleep 30
}

mkdir -p /tmp /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ip link set lo up
# debootstrap leaves no /etc/hosts: without it "localhost" resolves through gRPC's own
# resolver but not through getaddrinfo (Python sockets), unlike on any real machine.
grep -qs '^127.0.0.1[[:space:]].*localhost' /etc/hosts ||
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >> /etc/hosts

for share in $TW_SHARES; do
    tag=${share%%:*}
    path=${share#*:}
    mkdir -p "$path"
    if [ "$tag" = twsrc ]; then
        # The tree is tested as it was when the guest booted: a copy in tmpfs at the same
        # path (a few MB), so edits on the host during a long run cannot mix two versions
        # into one result. The guest cache (image, virtualenv: GBs) stays shared, read-only.
        mkdir -p /tw-live
        mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,ro "$tag" /tw-live || {
            log "could not mount share $tag"
            finish 97
        }
        mount -t tmpfs -o size=512m tmpfs "$path"
        (cd /tw-live && tar -c --exclude=./.cache --exclude=./.git --exclude=./.nox \
            --exclude=./.mypy_cache --exclude=./.hypothesis --exclude=./.pytest_cache \
            --exclude=./.ruff_cache --exclude='*.egg-info' --exclude=__pycache__ .) |
            tar -x -C "$path" || { log "could not copy the source tree"; finish 97; }
        if [ -d /tw-live/.cache ]; then
            mkdir -p "$path/.cache"
            mount --bind /tw-live/.cache "$path/.cache"
        fi
        log "source tree copied to tmpfs ($(du -sh --exclude=.cache "$path" | cut -f1))"
    else
        mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,ro "$tag" "$path" || {
            log "could not mount share $tag at $path"
            finish 97
        }
    fi
done

t0=$(cut -d' ' -f1 /proc/uptime)
modprobe rdma_rxe || { log "modprobe rdma_rxe failed"; finish 96; }
if [ "$TW_NET" = dummy ]; then
    # numdummies=0: otherwise the module makes dummy0 itself and `ip link add` fails.
    modprobe dummy numdummies=0
    ip link add dummy0 type dummy
    ip link set dummy0 mtu 9000
    ip link set dummy0 up
    ip addr add "$TW_ADDR" dev dummy0
    netdev=dummy0
else
    netdev=$(ls /sys/class/net | grep -v -e '^lo$' | head -n 1)
    ip link set "$netdev" up
    ip addr add "$TW_ADDR" dev "$netdev"
fi
rdma link add rxe0 type rxe netdev "$netdev" || { log "rdma link add failed"; finish 95; }
# The GID table fills in asynchronously after the link is added.
i=0
while [ $i -lt 50 ] && ! grep -q ':' /sys/class/infiniband/rxe0/ports/1/gids/1 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
t1=$(cut -d' ' -f1 /proc/uptime)
log "rxe0 on $netdev ($TW_ADDR) ready; uptime ${t0}s -> ${t1}s"
rdma link show

export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 TENSORWIRE_RDMA_DEVICE=rxe0
sh /tw-job/job.sh
finish $?
