// npm pack and npm publish (prepack, postpack). The package.json they pack
// carries no scripts: an installed pidstat needs none (the addon is
// prebuilt, and each command makes its code cache at its first run,
// src/cli/start.ts), and npm warns about every install-time script
// (install, prepare) of a package its user has not allowed.
//
//   node scripts/pack.mjs prepack
//     builds (npm run build, unless PIDSTAT_PACK_AS_BUILT=1 says that build
//     is fresh; then the prebuilt addons, scripts/build-native.mjs --prebuild
//     --pack), then writes the package.json to pack, keeping this
//     repository's beside it (.package.json.unpacked).
//   node scripts/pack.mjs postpack
//     puts this repository's package.json back.
// A prepack left without its postpack (a pack that failed half way) is
// undone first.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const manifest = join(root, 'package.json');
const kept = join(root, '.package.json.unpacked');

function restore() {
  if (existsSync(kept)) renameSync(kept, manifest);
}

if (process.argv[2] === 'prepack') {
  restore();
  if (process.env.PIDSTAT_PACK_AS_BUILT !== '1') {
    const npm = process.env.npm_execpath;
    const [command, args] = npm === undefined ? ['npm', ['run', 'build']] : [process.execPath, [npm, 'run', 'build']];
    execFileSync(command, args, { cwd: root, stdio: 'inherit' });
  }
  execFileSync(process.execPath, [join(root, 'scripts', 'build-native.mjs'), '--prebuild', '--pack'], { cwd: root, stdio: 'inherit' });
  const text = readFileSync(manifest, 'utf8');
  const pkg = JSON.parse(text);
  delete pkg.scripts;
  delete pkg.allowScripts;
  writeFileSync(kept, text);
  writeFileSync(manifest, `${JSON.stringify(pkg, null, 2)}\n`);
} else if (process.argv[2] === 'postpack') {
  restore();
} else {
  console.error('usage: node scripts/pack.mjs prepack|postpack');
  process.exit(64);
}
