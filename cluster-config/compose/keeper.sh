#!/bin/sh
# The first process of a peer's container, standing for its machine: when
# the peer process dies the container lives on, with whatever the peer left
# running in it, as a bare-metal machine does after a peer crash. The peer
# starts again once /tmp/peer-down is gone; the chaos suite's kill-peer
# nemesis writes that file and kills the peer (its pid is in /tmp/peer.pid).
# A container start is a boot: nothing is held down.
rm -f /tmp/peer-down /tmp/peer.pid
peer=
trap '[ -n "$peer" ] && kill -TERM "$peer" 2>/dev/null; wait; exit 0' TERM INT
while :; do
  if [ -e /tmp/peer-down ]; then
    sleep 0.2
    continue
  fi
  /usr/local/bin/flotilla "$@" &
  peer=$!
  echo "$peer" > /tmp/peer.pid
  wait "$peer"
  peer=
  sleep 0.2
done
