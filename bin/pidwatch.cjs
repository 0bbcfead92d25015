#!/usr/bin/env node
require('../dist/bundle/pidwatch.cjs').run();
