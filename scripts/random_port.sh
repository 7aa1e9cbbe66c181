#!/bin/sh
# Prints a random TCP port for a rendezvous store, below the kernel's range of ephemeral ports
# (/proc/sys/net/ipv4/ip_local_port_range, 32768 on Linux by default): the outgoing connections of
# jobs already running (each Gloo mesh opens many) take their ports from that range, so a port
# drawn there can be in use even when no server listens on it. A port that a socket on this machine
# already holds (any state, /proc/net/tcp and tcp6) is drawn again, up to 50 draws.
#
#   random_port.sh [N]   the port P printed has P, P+1, ..., P+N-1 all unheld (N = 1 by default);
#                        torchrun's environment needs 2: its agent holds P, our store takes P+1.
set -eu
count=${1:-1}
low=32768
if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range | tr -d ' ')
fi
if [ "$low" -gt $((21024 + count)) ]; then
  span=$((low - 20000 - count))
else
  span=40000
fi
# The local ports every socket holds, in hex as /proc/net/tcp writes them ("0100007F:7531").
held=$(cat /proc/net/tcp /proc/net/tcp6 2> /dev/null | awk '{ split($2, a, ":"); print a[2] }' || true)
draw=0
while :; do
  port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % span))
  free=1
  i=0
  while [ $i -lt "$count" ]; do
    hex=$(printf '%04X' $((port + i)))
    if printf '%s\n' "$held" | grep -qx "$hex"; then free=0; break; fi
    i=$((i + 1))
  done
  draw=$((draw + 1))
  if [ $free -eq 1 ] || [ $draw -ge 50 ]; then break; fi
done
echo "$port"
