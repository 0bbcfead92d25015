import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RESTART_PACE, RestartPace } from '../../src/daemon/restarts.js';

/** The supervisor's waits before another server (src/daemon/restarts.ts), on the run times the test gives. */

const quick = 1000;

test('a server that dies once is started again well inside the 2 s promised', () => {
  const pace = new RestartPace();
  const wait = pace.afterDeath(RESTART_PACE.stableMs);
  assert.ok(wait <= 500, `the first wait, ${wait} ms, leaves 1.5 s for the server to start`);
  assert.equal(new RestartPace().afterDeath(quick), wait, 'the first death waits as long however soon it came');
});

test('a server that keeps dying waits twice as long each time, up to a minute', () => {
  const pace = new RestartPace();
  const waits = Array.from({ length: 10 }, () => pace.afterDeath(quick));
  assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
});

test('a server that stayed up a minute had recovered: the next wait is the first again', () => {
  const pace = new RestartPace();
  for (let i = 0; i < 5; i++) pace.afterDeath(quick);
  assert.equal(pace.afterDeath(RESTART_PACE.stableMs - 1), 16_000, 'up just short of a minute: still dying');
  assert.equal(pace.afterDeath(RESTART_PACE.stableMs), 500, 'up a minute: recovered');
  assert.equal(pace.afterDeath(quick), 1000, 'and it grows again from there');
});
