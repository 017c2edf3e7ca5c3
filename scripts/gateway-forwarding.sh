#!/usr/bin/env bash
# Prepares a Linux instance to act as the runtime subnet's gateway: turns on
# IPv4 and IPv6 forwarding now and across reboots, with strict
# reverse-path filtering for both families. Run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Strict reverse-path filtering: a workload that forges a source address
# the way back to which is not the interface it came in on is dropped by
# the kernel right after the datapath (which denies sources no rule covers
# unless the pack says `uncovered: pass`). With one interface for both
# sides the way back to any address is that interface, and this does not
# help. IPv4 has the `rp_filter` sysctl; IPv6 gets an nftables rule
# (ipv6-rpfilter.nft), loaded now and at every boot.
# Source routing stays off (the kernel's default, made explicit).
cat > /etc/sysctl.d/60-egress-gateway.conf <<'CONF'
net.ipv4.ip_forward = 1
net.ipv6.conf.all.forwarding = 1
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.default.rp_filter = 1
net.ipv4.conf.all.accept_source_route = 0
net.ipv6.conf.all.accept_source_route = 0
CONF
sysctl -q --load /etc/sysctl.d/60-egress-gateway.conf
install -D -m 0644 "$here/ipv6-rpfilter.nft" /etc/egress/ipv6-rpfilter.nft
nft -f /etc/egress/ipv6-rpfilter.nft
if command -v systemctl > /dev/null; then
    cat > /etc/systemd/system/egress-ipv6-rpfilter.service <<'UNIT'
[Unit]
Description=egress: strict reverse-path filter for IPv6
Before=network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/sbin/nft -f /etc/egress/ipv6-rpfilter.nft
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable egress-ipv6-rpfilter.service > /dev/null
fi
echo "forwarding on; now point the runtime subnet's routes at this instance and run:"
echo "  egress-agent run --policy /etc/egress/policies --lan <runtime-side interface>"
