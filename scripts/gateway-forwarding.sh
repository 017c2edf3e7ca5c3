#!/usr/bin/env bash
# Prepares a Linux instance to act as the runtime subnet's gateway: turns on
# IPv4 and IPv6 forwarding now and across reboots. Run as root.
set -euo pipefail
cat > /etc/sysctl.d/60-egress-gateway.conf <<'CONF'
net.ipv4.ip_forward = 1
net.ipv6.conf.all.forwarding = 1
CONF
sysctl -q --load /etc/sysctl.d/60-egress-gateway.conf
echo "forwarding on; now point the runtime subnet's routes at this instance and run:"
echo "  egress-agent run --policy /etc/egress/policies --lan <runtime-side interface>"
