#!/usr/bin/env node
import { run } from '../dist/src/cli/pidwatch.js';
run();
