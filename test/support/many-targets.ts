import { run, type RunResult } from './helpers.js';

/**
 * One PidStatClient asking about COUNT targets, pids 1 to COUNT on
 * 127.0.0.1, in one queryMany, in a process of its own (so that its peak
 * RSS is the client's), each answer checked against /proc before and after
 * (a pid handed out meanwhile has no truth and is left out). For the test
 * of many targets (test/attacks/robust.test.ts) and the bench's figure of
 * 100 000 (test/bench/client.ts).
 */

export interface ManyTargetsReport {
  ms: number;
  count: number;
  states: Record<string, number>;
  tries: Record<string, number>;
  unstable: number;
  wrongCount: number;
  wrong: string[];
  drops: number;
  maxRssKb: number;
}

const SCRIPT = `
      import { existsSync, readFileSync } from 'node:fs';
      import { PidStatClient } from ${JSON.stringify(new URL('../../src/index.js', import.meta.url).href)};
      const count = Number(process.env.COUNT);
      const lastPid = () => Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'latin1'));
      const before = new Uint8Array(count + 1);
      const firstLast = lastPid();
      for (let p = 1; p <= count; p++) before[p] = existsSync('/proc/' + p) ? 1 : 0;
      const rcvbufErrors = () => { const [names, values] = readFileSync('/proc/net/snmp', 'latin1').split('\\n').filter((l) => l.startsWith('Udp:')).map((l) => l.split(/\\s+/)); return Number(values[names.indexOf('RcvbufErrors')]); };
      const dropsBefore = rcvbufErrors();
      const client = new PidStatClient({ port: Number(process.env.PORT), local: false });
      const began = performance.now();
      const results = await client.queryMany(Array.from({ length: count }, (_, i) => ({ host: '127.0.0.1', pid: i + 1 })));
      const ms = performance.now() - began;
      const drops = rcvbufErrors() - dropsBefore;
      await client.close();
      // Pids handed out meanwhile (by anything on the machine) may have lived and died during the run: no truth for them.
      const after = new Uint8Array(count + 1);
      for (let p = 1; p <= count; p++) after[p] = existsSync('/proc/' + p) ? 1 : 0;
      const lastLast = lastPid();
      const window = (p) => firstLast === lastLast ? false : firstLast < lastLast ? p > firstLast && p <= lastLast : p > firstLast || p <= lastLast;
      const states = {};
      const tries = {};
      const wrong = [];
      let unstable = 0;
      results.forEach((r, i) => {
        const pid = i + 1;
        states[r.state] = (states[r.state] ?? 0) + 1;
        tries[r.tries] = (tries[r.tries] ?? 0) + 1;
        if (r.pid !== pid || r.host !== '127.0.0.1') { wrong.push(pid + ': result for ' + r.host + ':' + r.pid); return; }
        if (after[pid] !== before[pid] || window(pid)) { unstable++; return; }
        const truth = before[pid] ? 'exists' : 'dead';
        if (r.state !== truth) wrong.push(pid + ': ' + r.state + ' (' + (r.failure?.kind ?? '') + '), truth ' + truth);
      });
      process.stdout.write(JSON.stringify({ ms, count: results.length, states, tries, unstable, wrongCount: wrong.length, wrong: wrong.slice(0, 20), drops, maxRssKb: process.resourceUsage().maxRSS }));
    `;

/** Asks the daemon on 127.0.0.1:`port` about pids 1 to `count`; the child's run and, where it ended well, its report. */
export async function askManyTargets(port: number, count: number, timeoutMs: number): Promise<{ result: RunResult; report?: ManyTargetsReport }> {
  const result = await run(process.execPath, ['--input-type=module', '-e', SCRIPT], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, COUNT: String(count), PORT: String(port) },
    timeoutMs,
  } as Parameters<typeof run>[2]);
  return result.code === 0 ? { result, report: JSON.parse(result.stdout) as ManyTargetsReport } : { result };
}
