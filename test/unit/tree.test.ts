import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findJob, appendMarker, type ProcessStat } from '../../src/job/tree.js';

/**
 * Which processes are the job (src/job/tree.ts, pidwatch(1), Finding the job),
 * decided over a process table given as a list: the root checked by its
 * start token, the parent chain, the groups a member leads, never the
 * root's own group, never init or an excluded pid, never a zombie.
 */

const p = (pid: number, ppid: number, pgrp = pid, state = 'S', start = `${pid}00`): ProcessStat => ({ pid, ppid, pgrp, state, start });
const pids = (found: readonly ProcessStat[]) => found.map((q) => q.pid).sort((a, b) => a - b);

test('the root and everything below it by the parent chain, however deep', () => {
  const table = [p(1, 0), p(10, 1), p(11, 10, 10), p(12, 11, 10), p(13, 12, 10), p(20, 1)];
  assert.deepEqual(pids(findJob({ root: { pid: 10, start: '1000' } }, table)), [10, 11, 12, 13]);
});

test('a root whose start token is another\'s is no root: the pid went to another process', () => {
  const table = [p(1, 0), p(10, 1, 10, 'S', '999'), p(11, 10, 10)];
  assert.deepEqual(pids(findJob({ root: { pid: 10, start: '1000' } }, table)), []);
});

test('a group a member leads is the job\'s (a setsid child\'s, reparented to init), the root\'s own group is not', () => {
  // 11 leads group 11 and its child 12 was reparented to init; 30 shares the root's group (a pipeline's reader).
  const table = [p(1, 0), p(10, 1, 10), p(11, 10, 11), p(12, 1, 11), p(30, 1, 10)];
  assert.deepEqual(pids(findJob({ root: { pid: 10, start: '1000' } }, table)), [10, 11, 12]);
});

test('never init, never an excluded pid (the watcher, its launcher), never a zombie', () => {
  const table = [p(1, 0), p(10, 1), p(11, 10, 10), p(12, 10, 10, 'Z'), p(13, 10, 10)];
  assert.deepEqual(pids(findJob({ root: { pid: 10, start: '1000' }, exclude: new Set([13]) }, table)), [10, 11]);
  assert.deepEqual(pids(findJob({ root: { pid: 1 } }, table)), []);
});

test('the job\'s marker is appended to those inherited', () => {
  assert.equal(appendMarker(undefined, 'ab'), 'ab');
  assert.equal(appendMarker('  ', 'ab'), 'ab');
  assert.equal(appendMarker('cd ef ', 'ab'), 'cd ef ab');
});
