#!/usr/bin/env bash
# Prepares a Linux instance to act as the runtime subnet's gateway: turns on
# IPv4 and IPv6 forwarding now and across reboots. Run as root.
set -euo pipefail
# Strict reverse-path filtering: a workload that forges a source address
# outside the runtime subnet (which no rule's `source` covers, so the
# datapath lets it pass by the policy contract) is dropped by the kernel
# right after the datapath, since the way back to that address is not the
# interface it came in on. (With one interface for both sides it is, and
# this does not help; IPv6 has no such switch: see docs/DEPLOYMENT.md.)
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
echo "forwarding on; now point the runtime subnet's routes at this instance and run:"
echo "  egress-agent run --policy /etc/egress/policies --lan <runtime-side interface>"
