#!/bin/sh
# Prints a random TCP port for a rendezvous store, below the kernel's range of ephemeral ports
# (/proc/sys/net/ipv4/ip_local_port_range, 32768 on Linux by default): the outgoing connections of
# jobs already running (each Gloo mesh opens many) take their ports from that range, so a port
# drawn there can be in use even when no server listens on it.
set -eu
low=32768
if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range | tr -d ' ')
fi
if [ "$low" -gt 21024 ]; then
  echo $((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % (low - 20000)))
else
  echo $((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
fi
