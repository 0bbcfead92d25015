/**
 * The daemon's young generation, capped at 4 MB a semi-space.
 *
 * V8 grows a semi-space up to 16 MB (Node 20; 32 MB on Node 24) when many
 * new objects live on, as when a daemon stores subscriptions to death
 * notices at full speed, and keeps what it grew: some 30 to 60 MB of RSS
 * that hold nothing. With 4 MB, a daemon holding 100 000 subscriptions stays
 * near 125 MB instead of 160 to 210 MB (bench figure 'mass deaths'); the
 * requests it answers make short-lived garbage, which a small young
 * generation collects as cheaply (npm run bench, daemon throughput).
 *
 * Node takes it only on its command line: bin/pidstatd.cjs gives it in its
 * first lines, and the daemon passes it to the processes it starts.
 */
export const DAEMON_HEAP_OPTION = '--max-semi-space-size=4';
