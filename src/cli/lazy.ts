/**
 * import() of the dependencies a command loads only when it needs them. The
 * bins run a command's bundle through node:vm (src/cli/start.ts), where
 * import() has no loader behind it: the bin's own import() is used then,
 * which start() leaves under LOADER_IMPORT. Loading all three at every start
 * instead would more than double pidstat's start-to-answer (bench figure
 * 'start-up machinery', test/bench/startup.ts; the figures are in the
 * README, Performance).
 */

export const LOADER_IMPORT = Symbol.for('pidstat.import');

// Literal specifiers, so that tsc and esbuild see what is imported.
const IMPORTS = {
  yargs: () => import('yargs'),
  chalk: () => import('chalk'),
  ora: () => import('ora'),
};

type Lazy = typeof IMPORTS;

export function importLazily<K extends keyof Lazy>(specifier: K): ReturnType<Lazy[K]> {
  const viaLoader = (globalThis as Record<symbol, unknown>)[LOADER_IMPORT] as ((specifier: string) => Promise<unknown>) | undefined;
  return (viaLoader !== undefined ? viaLoader(specifier) : IMPORTS[specifier]()) as ReturnType<Lazy[K]>;
}
