import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ask, freePort, ROOT, run } from '../support/helpers.js';
import { stopChild } from './lib.js';

/**
 * The C tools: udpload (closed-loop load generator; test/bench/udpload.c, a
 * copy of /work/shared/tools/udpload.c that can send a request it is given)
 * and udplimit (the floor: a C responder, from /work/shared/tools), built
 * with `cc -O2` into a temp dir.
 */

const SOURCES: Record<'udpload' | 'udplimit', string> = {
  udpload: join(ROOT, 'test', 'bench', 'udpload.c'),
  udplimit: '/work/shared/tools/udplimit.c',
};

export interface Tools {
  udpload: string;
  udplimit: string;
  /** Removes the temp dir. */
  remove(): void;
}

/** Builds the tools, or says why it cannot (no `cc`, a compile error). */
export function buildTools(): Tools | { reason: string } {
  if (spawnSync('cc', ['--version'], { stdio: 'ignore' }).error) return { reason: '`cc` not found' };
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-bench-'));
  for (const name of ['udpload', 'udplimit'] as const) {
    const result = spawnSync('cc', ['-O2', '-o', join(dir, name), SOURCES[name]], { encoding: 'utf8' });
    if (result.status !== 0) {
      rmSync(dir, { recursive: true, force: true });
      return { reason: `cc -O2 ${name}.c failed: ${(result.stderr || String(result.error)).trim()}` };
    }
  }
  return { udpload: join(dir, 'udpload'), udplimit: join(dir, 'udplimit'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Load {
  sent: number;
  replies: number;
  rate: number;
  exis: number;
  unkn: number;
  other: number;
}

/**
 * `udpload 127.0.0.1 PORT SECONDS WINDOW PID`, its summary line parsed;
 * `message`, when given, is the exact request it sends (UDPLOAD_MESSAGE).
 */
export async function udpload(tools: Tools, port: number, seconds: number, window: number, pid: string, message?: string): Promise<Load> {
  const args = ['127.0.0.1', String(port), String(seconds), String(window), pid];
  const env: NodeJS.ProcessEnv = { ...process.env, UDPLOAD_MESSAGE: message };
  if (message === undefined) delete env['UDPLOAD_MESSAGE'];
  const result = await run(tools.udpload, args, { timeoutMs: (seconds + 10) * 1000, env });
  const match = /sent=(\d+) replies=(\d+) rate=(\d+)\/s exis=(\d+) unkn=(\d+) other=(\d+)/.exec(result.stdout);
  if (result.code !== 0 || !match) throw new Error(`udpload ${args.join(' ')}: exit ${result.code}: ${result.stdout}${result.stderr}`);
  const [sent, replies, rate, exis, unkn, other] = match.slice(1).map(Number) as [number, number, number, number, number, number];
  if (replies === 0 || other !== 0) throw new Error(`udpload against port ${port}: ${match[0]}`);
  return { sent, replies, rate, exis, unkn, other };
}

export interface Floor {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** Starts udplimit on a free port (it binds 0.0.0.0) and waits until it answers. */
export async function startFloor(tools: Tools): Promise<Floor> {
  const port = await freePort('0.0.0.0');
  const child = spawn(tools.udplimit, [String(port)], { stdio: 'ignore' });
  const stop = () => stopChild(child, 'SIGKILL');
  const deadline = performance.now() + 3000;
  while (child.exitCode === null && performance.now() < deadline) {
    if ((await ask(port, 'PIDR 1 127.0.0.1 3\n', { waitMs: 100 })) !== undefined) return { pid: child.pid!, port, stop };
  }
  await stop();
  throw new Error(`udplimit ${port} did not answer (exit ${child.exitCode})`);
}
