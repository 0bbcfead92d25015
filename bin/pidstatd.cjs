#!/usr/bin/env node
require('../dist/bundle/pidstatd.cjs').run();
