#!/usr/bin/env node
require('../dist/bundle/pidstat.cjs').run();
