import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { binEnv, ROOT, run, startDaemon, startSleeper } from '../support/helpers.js';
import { median } from './lib.js';
import { metOrNot, type Row } from './table.js';

/**
 * What each piece of pidstat's start-up machinery saves of its
 * start-to-answer (`pidstat --no-local --port P 127.0.0.1 PID`, answered by
 * a daemon): the run with every piece is timed in the same rounds as a run
 * without each one, and a piece's saving is the median over the rounds of
 * (without - with). The order of the runs is reversed every other round, so
 * neither side always runs first. A piece stays only where it saves 1 ms or
 * more (5 ms for the reader). No piece needs a
 * switch in the code:
 *
 * - the bundle's V8 code cache made at build (src/cli/start.ts,
 *   scripts/code-cache.mjs), left out of a copy of the package;
 * - the suite's own command-line reader (readCommandLine(),
 *   src/cli/args.ts), against yargs-parser, the reader inside yargs: it is
 *   imported at start (node's --import) in the run without, the cost of
 *   reading with it (a piece kept only where it saves 5 ms or more);
 * - lazy imports (src/cli/lazy.ts): without them, chalk, ora and yargs
 *   would load at every start, as node's --import loads them here.
 *
 * Every run is of a copy of the package made at the start, so a build by
 * someone else meanwhile changes nothing measured; its node_modules and
 * prebuilt addon are the package's own, linked.
 */

/** Rounds: at some 2 ms of noise a run on these shared machines, enough that a 1 ms saving shows. */
const ROUNDS = 40;

/** What every Node start pays where these are set (see client.ts): both sides run without them. */
const CLEAN = { NODE_EXTRA_CA_CERTS: undefined, NODE_OPTIONS: undefined };

/** The modules src/cli/lazy.ts imports only when a command needs them. */
const LAZY_MODULES = ['chalk', 'ora', 'yargs'];

interface Variant {
  /** The copy of the package it runs. */
  dir: string;
  nodeOptions: readonly string[];
  /** What comes before `--port P 127.0.0.1 PID`. */
  args: readonly string[];
}

interface Piece {
  name: string;
  without: Variant;
  /** What it must save to stay, in ms. */
  goalMs: number;
}

/** bin/, dist/bundle/ (its code caches too if `caches`) and package.json; node_modules, prebuilds/ and dist/native/ linked. */
function copyOfPackage(into: string, caches: boolean): string {
  mkdirSync(join(into, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'bin'), join(into, 'bin'), { recursive: true });
  cpSync(join(ROOT, 'dist', 'bundle'), join(into, 'dist', 'bundle'), { recursive: true, filter: (file) => caches || !file.endsWith('.cache') });
  cpSync(join(ROOT, 'package.json'), join(into, 'package.json'));
  for (const path of ['node_modules', 'prebuilds', join('dist', 'native')]) {
    if (existsSync(join(ROOT, path))) symlinkSync(join(ROOT, path), join(into, path));
  }
  if (caches) {
    // A build that ran while this copied: its bundle and cache may not match.
    const bundle = readFileSync(join(into, 'dist', 'bundle', 'pidstat.cjs'), 'latin1');
    const cache = readFileSync(join(into, 'dist', 'bundle', 'pidstat.cache')).subarray(0, 33).toString('latin1');
    if (!bundle.startsWith(`// build ${cache}`)) throw new Error('the bundle changed while it was copied (a build ran): run the figure again');
  }
  return into;
}

/** One pidstat run that must print `127.0.0.1:PID exists`; its wall time. */
async function timed(variant: Variant, port: number, pid: number): Promise<number> {
  const args = [...variant.nodeOptions, INSPECT_PORT_OPTION, join(variant.dir, 'bin', 'pidstat.cjs'), ...variant.args, '--port', String(port), '127.0.0.1', String(pid)];
  const result = await run(process.execPath, args, { cwd: variant.dir, env: binEnv(CLEAN) });
  const expected = `127.0.0.1:${pid} exists\n`;
  if (result.code !== 0 || result.stdout !== expected || result.stderr !== '') {
    throw new Error(`pidstat ${args.join(' ')} exited ${result.code} with ${JSON.stringify(result.stdout + result.stderr)}`);
  }
  return result.ms;
}

/** The value below which a share `p` of `values` lies. */
function quantile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.round((sorted.length - 1) * p)]!;
}

export async function startupMachinery(): Promise<Row[]> {
  const temp = mkdtempSync(join(tmpdir(), 'pidstat-bench-startup-'));
  const daemon = await startDaemon(['--bind', '127.0.0.1']);
  const sleeper = startSleeper();
  try {
    const withAll: Variant = { dir: copyOfPackage(join(temp, 'cached'), true), nodeOptions: [], args: ['--no-local'] };
    const pieces: Piece[] = [
      { name: 'V8 code cache (dist/bundle/*.cache)', without: { ...withAll, dir: copyOfPackage(join(temp, 'uncached'), false) }, goalMs: 1 },
      { name: 'the command-line reader (readCommandLine) vs yargs-parser', without: { ...withAll, nodeOptions: ['--import=yargs-parser'] }, goalMs: 5 },
      { name: 'lazy imports (lazy.ts) vs chalk, ora and yargs loaded at start', without: { ...withAll, nodeOptions: LAZY_MODULES.map((name) => `--import=${name}`) }, goalMs: 1 },
    ];
    const variants = [withAll, ...pieces.map((piece) => piece.without)];
    // One untimed run of each first, so none pays for a cold file cache.
    for (const variant of variants) await timed(variant, daemon.port, sleeper.pid);
    const times = variants.map((): number[] => []);
    for (let round = 0; round < ROUNDS; round++) {
      const order = variants.map((_, i) => i);
      if (round % 2 === 1) order.reverse();
      for (const i of order) times[i]!.push(await timed(variants[i]!, daemon.port, sleeper.pid));
    }
    const withTimes = times[0]!;
    return pieces.map((piece, p) => {
      const withoutTimes = times[p + 1]!;
      const saved = withoutTimes.map((t, round) => t - withTimes[round]!);
      const savedMs = median(saved);
      const slower = saved.filter((d) => d > 0).length;
      return {
        figure: `start-up machinery: ${piece.name}, ms saved (median of ${ROUNDS} alternated rounds)`,
        ours: `${savedMs.toFixed(1)} ms (quartiles ${quantile(saved, 0.25).toFixed(1)} to ${quantile(saved, 0.75).toFixed(1)}; slower without in ${slower}/${ROUNDS})`,
        reference: `${median(withoutTimes).toFixed(1)} ms without, ${median(withTimes).toFixed(1)} ms with`,
        ratio: median(withTimes) / median(withoutTimes),
        goal: `>= ${piece.goalMs} ms saved`,
        met: metOrNot(savedMs >= piece.goalMs),
      };
    });
  } finally {
    await sleeper.stop();
    await daemon.stop();
    rmSync(temp, { recursive: true, force: true });
  }
}
