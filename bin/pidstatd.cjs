#!/bin/sh
':' //; exec node '--inspect-port=[fe80::1]:9229' '--max-semi-space-size=4' "$0" "$@"
// Line 2 runs in /bin/sh and means nothing to Node: node starts with an inspector that cannot open (pidstatd(8), SIGNALS; env -S is not everywhere)
// and a young generation of 4 MB a semi-space (src/daemon/heap.ts).
require('../dist/bundle/start.cjs').start('pidstatd');
