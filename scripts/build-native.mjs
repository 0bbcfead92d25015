// Builds native/linux.c, the Linux system calls of the suite (batched UDP,
// Unix datagram sockets, pidfd exit watches, HMAC), into pidstat_linux.node,
// a Node-API addon: one build serves Node 20, 22 and 24 (NAPI_VERSION 8).
//
//   node scripts/build-native.mjs --prebuild [--pack | --strict]
//     builds prebuilds/linux-x64/pidstat_linux.node and
//     prebuilds/linux-arm64/, the layout of prebuildify and node-gyp-build,
//     which the package carries: this machine's with `cc` (or CC), the other
//     with Debian's cross compiler (gcc-aarch64-linux-gnu or
//     gcc-x86-64-linux-gnu).
//     Alone (npm run build), one that cannot be built is said and skipped.
//     With --pack (prepack: npm pack), this machine's must build; the other
//     is built where its cross compiler is on PATH, and else skipped with a
//     one-line warning, so that npm pack needs only this machine's compiler.
//     With --strict (npm run prebuilds, and prepublishOnly: npm publish),
//     both must build, or the script fails: no package is published without
//     both.
//   node scripts/build-native.mjs
//     (by hand, in an installed package where no prebuilt addon fits:
//     `npm explore -g pidstat -- node scripts/build-native.mjs`; the
//     install runs no script, README, Install) nothing where the prebuilt
//     addon loads; else builds dist/native/pidstat_linux.node from the
//     source with the user's compiler. Where it cannot build (no compiler,
//     no headers, not Linux), it says why and the commands read their
//     sockets through Node's dgram, answering the same, slower.
//
// src/sys/native.ts looks for the prebuilt addon first, then the built one.
import { spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The addon's name, as a file and as the module name Node-API registers (a C identifier). */
const NAME = 'pidstat_linux';
const source = join(root, 'native', 'linux.c');
const prebuilt = (arch) => join(root, 'prebuilds', `linux-${arch}`, `${NAME}.node`);
const built = join(root, 'dist', 'native', `${NAME}.node`);

/** The targets, with Debian's name for their cross compiler and ELF's for their machine. */
const TARGETS = {
  x64: { gcc: 'x86_64-linux-gnu-gcc', machine: 62, debian: 'gcc-x86-64-linux-gnu' },
  arm64: { gcc: 'aarch64-linux-gnu-gcc', machine: 183, debian: 'gcc-aarch64-linux-gnu' },
};

const NOT_BUILT =
  "pidstat: the commands work without it, with the same answers, more slowly: sockets are read through Node's dgram, " +
  'watched pids are checked every 100 ms instead of through pidfds, and MACs are computed by node:crypto.';

/** The folder holding node_api.h: npm's nodedir, or beside this node. */
function nodeHeaders() {
  const prefixes = [process.env.npm_config_nodedir, join(dirname(process.execPath), '..')].filter(Boolean);
  const include = prefixes.map((prefix) => join(prefix, 'include', 'node')).find((dir) => existsSync(join(dir, 'node_api.h')));
  if (include === undefined) throw new Error(`Node's headers (node_api.h) are not under ${prefixes.join(' or ')}/include/node`);
  return include;
}

function newer(file, than) {
  return existsSync(file) && than.every((other) => statSync(file).mtimeMs > statSync(other).mtimeMs);
}

/** The ELF machine of a shared object (e_machine, a little-endian u16 at byte 18). */
function elfMachine(file) {
  const header = Buffer.alloc(20);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, header, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  return header.subarray(0, 4).toString('latin1') === '\x7fELF' ? header.readUInt16LE(18) : -1;
}

/**
 * Compiles the addon into `target` for `arch` with `cc`, and checks it: this
 * machine's must load into this node; another's must be an ELF file for its
 * machine. Stripped (-s), so it names no path of the machine that built it.
 */
function compile(cc, arch, target, extra) {
  const include = nodeHeaders();
  mkdirSync(dirname(target), { recursive: true });
  const partial = join(dirname(target), `${NAME}-${process.pid}.node`);
  const args = ['-O2', '-Wall', '-shared', '-fPIC', ...extra, '-DNAPI_VERSION=8', `-DNODE_GYP_MODULE_NAME=${NAME}`, `-I${include}`, '-o', partial, source];
  const result = spawnSync(cc, args, { encoding: 'utf8' });
  try {
    if (result.error !== undefined) throw new Error(`${cc}: ${result.error.message}`);
    if (result.status !== 0) throw new Error(`${cc} ${args.join(' ')} failed:\n${result.stderr.trim()}`);
    if (arch === process.arch) {
      try {
        createRequire(import.meta.url)(partial);
      } catch (err) {
        throw new Error(`the built addon does not load: ${err.message}`);
      }
    } else if (elfMachine(partial) !== TARGETS[arch].machine) {
      throw new Error(`${cc} did not make an ELF file for ${arch}`);
    }
    renameSync(partial, target);
  } finally {
    rmSync(partial, { force: true });
  }
}

/** Whether `program` (a bare name) is an executable file in a folder of PATH. */
function onPath(program) {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      accessSync(join(dir || '.', program), constants.X_OK);
      return statSync(join(dir || '.', program)).isFile();
    } catch {
      return false;
    }
  });
}

/**
 * Builds the prebuilt addons that are older than the source or this script.
 * `mode` is 'build' (say and skip what cannot be built), 'pack' (this
 * machine's must build; another without its cross compiler is skipped with a
 * warning) or 'strict' (both must build).
 */
function prebuild(mode) {
  if (process.platform !== 'linux') {
    console.error('pidstat: no prebuilt addons: they are built on Linux, where recvmmsg and sendmmsg are.');
    process.exit(mode === 'build' ? 0 : 1);
  }
  const failed = [];
  for (const arch of Object.keys(TARGETS)) {
    const target = prebuilt(arch);
    if (newer(target, [source, fileURLToPath(import.meta.url)])) continue;
    const own = arch === process.arch;
    const cc = own ? process.env.CC || 'cc' : TARGETS[arch].gcc;
    const hint = own ? '' : ` (Debian: apt-get install ${TARGETS[arch].debian})`;
    if (!own && !onPath(cc)) {
      // An addon of an older source must not be packed in its place.
      rmSync(target, { force: true });
      if (mode === 'pack') {
        console.error(`pidstat: warning: packing without the addon for linux-${arch}: ${cc} is not on PATH${hint}; npm publish insists on it.`);
        continue;
      }
      failed.push(arch);
      console.error(`pidstat: no prebuilt addon for linux-${arch}: ${cc} is not on PATH${hint}.`);
      continue;
    }
    try {
      compile(cc, arch, target, ['-s']);
    } catch (err) {
      failed.push(arch);
      rmSync(target, { force: true });
      console.error(`pidstat: no prebuilt addon for linux-${arch}: ${err.message}${hint}.`);
      if (own && mode === 'build') console.error(NOT_BUILT);
    }
  }
  if (failed.length === 0 || mode === 'build') return;
  const which = failed.map((arch) => `linux-${arch}`).join(' and ');
  if (mode === 'strict') {
    console.error(`pidstat: npm publish needs the addon prebuilt for both linux-x64 and linux-arm64, and ${which} has none (see above).`);
  } else {
    console.error(`pidstat: the addon for ${which} did not build: not packed.`);
  }
  process.exit(1);
}

/** At install: the prebuilt addon where it loads, else one built here, else a reason. */
function install() {
  // In a fresh clone, npm's install step comes before the build (prepare),
  // which builds the addons itself: nothing to do yet.
  if (!existsSync(join(root, 'dist', 'bundle', 'start.cjs'))) return;
  if (process.platform !== 'linux') return say('recvmmsg and sendmmsg are Linux system calls');
  let why = `no prebuilt addon for linux-${process.arch}`;
  if (TARGETS[process.arch] !== undefined && existsSync(prebuilt(process.arch))) {
    try {
      createRequire(import.meta.url)(prebuilt(process.arch));
      rmSync(built, { force: true });
      return;
    } catch (err) {
      why = `the prebuilt addon does not load here (${err.message.split('\n')[0]})`;
    }
  }
  if (newer(built, [source, fileURLToPath(import.meta.url)])) return;
  try {
    compile(process.env.CC || 'cc', process.arch, built, []);
  } catch (err) {
    rmSync(built, { force: true });
    say(`${why}, and none built: ${err.message}`);
  }
}

function say(why) {
  console.error(`pidstat: the addon of Linux system calls (native/linux.c) is not available: ${why}.`);
  console.error(NOT_BUILT);
}

const args = process.argv.slice(2);
if (!args.includes('--prebuild')) install();
else {
  prebuild(args.includes('--strict') ? 'strict' : args.includes('--pack') ? 'pack' : 'build');
  // A machine no prebuilt addon is for (ppc64le...) builds its own.
  if (TARGETS[process.arch] === undefined) install();
}
