// Builds the example/test plugins into plugins/dist/<name>.wasm.
//   node plugins/build.mjs              rebuild everything; fail on any error
//   node plugins/build.mjs --if-missing build only outputs that do not exist yet; a missing Rust
//                                        toolchain only skips the Rust plugins, with a warning
//   ... --install-rust                   (npm test) a missing Rust toolchain (rustc, cargo, the packaged
//                                        crates) is installed with apt-get when running as root on
//                                        Debian, else the build fails
// WASMHOST_RUSTC and WASMHOST_CARGO override the rustc and cargo used (default: Debian's, in /usr/bin).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const pluginsDir = dirname(fileURLToPath(import.meta.url));
const rootDir = dirname(pluginsDir);
const distDir = join(pluginsDir, 'dist');
const ifMissing = process.argv.includes('--if-missing');
const installRust = process.argv.includes('--install-rust');

// Debian's rustc, which has the wasm32 std (libstd-rust-dev-wasm32); a rustup rustc earlier on
// PATH usually has no wasm32 target, so it is never picked implicitly.
const rustc = process.env.WASMHOST_RUSTC ?? '/usr/bin/rustc';
const cargo = process.env.WASMHOST_CARGO ?? '/usr/bin/cargo';
// Crates come from Debian's librust-*-dev packages, unpacked here (plugins/cargo/.cargo/config.toml).
const CRATE_DIR = '/usr/share/cargo/registry';
const CRATE_PACKAGES = {
  serde_json: 'librust-serde-json-dev',
  regex: 'librust-regex-dev',
  serde_derive: 'librust-serde-derive-dev',
};
const RUST_PACKAGES = ['rustc', 'libstd-rust-dev-wasm32', 'cargo', ...Object.values(CRATE_PACKAGES)];

/** Names of the entries of plugins/<dir> that end in `suffix` (and are folders when `folders`). */
function pluginNames(dir, suffix, folders = false) {
  const path = join(pluginsDir, dir);
  if (!existsSync(path)) return [];
  return readdirSync(path, { withFileTypes: true })
    .filter((e) => e.isDirectory() === folders && e.name.endsWith(suffix))
    .map((e) => e.name.slice(0, e.name.length - suffix.length));
}

// AssemblyScript: plugins/as/<name>/assembly/index.ts (plugins/as/shared holds common code).
const asPlugins = pluginNames('as', '', true).filter((name) => name !== 'shared');
const watPlugins = pluginNames('wat', '.wat');
const rustPlugins = pluginNames('rust', '.rs');
// Cargo: plugins/cargo/<name>/ is a crate whose cdylib is <name>.wasm.
const cargoPlugins = pluginNames('cargo', '', true).filter((name) => name !== 'target' && !name.startsWith('.'));

const outputOf = (name) => join(distDir, `${name}.wasm`);

/**
 * Runs `write(tmpPath)` then renames the result into place, so a reader (or a concurrent
 * `--if-missing` build from another npm script) never sees a half-written module.
 */
async function writeOutput(name, write) {
  const tmp = `${outputOf(name)}.${process.pid}.tmp`;
  try {
    await write(tmp);
    renameSync(tmp, outputOf(name));
  } finally {
    rmSync(tmp, { force: true });
  }
}

async function main() {
  // --if-missing (npm start/test): only what is absent; otherwise everything.
  const wanted = (names) => (ifMissing ? names.filter((name) => !existsSync(outputOf(name))) : names);
  const as = wanted(asPlugins);
  const wat = wanted(watPlugins);
  const rust = [...wanted(rustPlugins), ...wanted(cargoPlugins)];
  if (as.length + wat.length + rust.length === 0) return;
  mkdirSync(distDir, { recursive: true });

  for (const name of as) await writeOutput(name, (out) => buildAssemblyScript(name, out));
  for (const name of wat) await writeOutput(name, (out) => buildWat(name, out));

  let problem = rust.length === 0 ? null : rustProblem();
  if (problem !== null && installRust) {
    installRustToolchain(problem);
    problem = rustProblem();
    if (problem !== null) throw new Error(`cannot build Rust plugins (${rust.join(', ')}) after installing: ${problem}`);
  }
  if (problem !== null) {
    if (!ifMissing) throw new Error(`cannot build Rust plugins (${rust.join(', ')}): ${problem}`);
    console.warn(`plugins: WARNING skipping Rust plugins (${rust.join(', ')}): ${problem}`);
  } else {
    for (const name of rust) {
      await writeOutput(name, (out) => (cargoPlugins.includes(name) ? buildCargo(name, out) : buildRust(name, out)));
    }
  }
  console.log(
    `plugins: built ${[...as, ...wat, ...(problem === null ? rust : [])].join(', ')} into ${relative(rootDir, distDir)}/`,
  );
}

async function buildAssemblyScript(name, out) {
  const { default: asc } = await import('assemblyscript/asc');
  const entry = relative(rootDir, join(pluginsDir, 'as', name, 'assembly', 'index.ts'));
  // asc names elements by path relative to its baseDir; the abort handler lives in shared/host.ts.
  const abort = relative(rootDir, join(pluginsDir, 'as', 'shared', 'assembly', 'host')) + '/pluginAbort';
  const { error, stderr } = await asc.main(
    [entry, '--outFile', out, '--optimizeLevel', '3', '--shrinkLevel', '1', '--use', `abort=${abort}`, '--baseDir', rootDir],
    {},
  );
  if (error) throw new Error(`AssemblyScript plugin ${name} failed to build:\n${stderr.toString()}`);
}

async function buildWat(name, out) {
  const { default: loadWabt } = await import('wabt');
  const wabt = await loadWabt();
  const file = join(pluginsDir, 'wat', `${name}.wat`);
  // Atomics (dirty_probe writes with them) are in the threads proposal; Wasm engines accept them
  // on unshared memories too.
  const features = { threads: true };
  const module = wabt.parseWat(file, readFileSync(file, 'utf8'), features);
  try {
    module.validate(features);
    writeFileSync(out, module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

/** Why the Rust plugins cannot be built here, or null when they can. */
function rustProblem() {
  if (!existsSync(rustc)) return `${rustc} not found (install Debian packages ${RUST_PACKAGES.join(' ')})`;
  let sysroot;
  try {
    sysroot = execFileSync(rustc, ['--print', 'sysroot'], { encoding: 'utf8' }).trim();
  } catch (err) {
    return `${rustc} does not run: ${err.message}`;
  }
  if (!existsSync(join(sysroot, 'lib', 'rustlib', 'wasm32-unknown-unknown', 'lib'))) {
    return `${rustc} has no wasm32-unknown-unknown std (install Debian package libstd-rust-dev-wasm32)`;
  }
  if (cargoPlugins.length === 0) return null;
  if (!existsSync(cargo)) return `${cargo} not found (install Debian package cargo)`;
  const crates = existsSync(CRATE_DIR) ? readdirSync(CRATE_DIR) : [];
  const missing = Object.entries(CRATE_PACKAGES).filter(([crate]) => !crates.some((dir) => dir.startsWith(`${crate}-`)));
  if (missing.length > 0) {
    return `crates ${missing.map(([crate]) => crate).join(', ')} not in ${CRATE_DIR} (install Debian packages ${missing.map(([, pkg]) => pkg).join(' ')})`;
  }
  return null;
}

/** The tests need the Rust plugins; on a fresh Debian machine (as in CI) their toolchain comes from apt. */
function installRustToolchain(problem) {
  const packages = RUST_PACKAGES;
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    throw new Error(`the tests need the Rust plugin, but ${problem}; install Debian packages: ${packages.join(' ')}`);
  }
  console.log(`plugins: ${problem}; installing Debian packages ${packages.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...packages], { stdio: 'inherit', env });
}

function buildRust(name, out) {
  const source = join(pluginsDir, 'rust', `${name}.rs`);
  try {
    execFileSync(
      rustc,
      [
        '--edition',
        '2021',
        '--target',
        'wasm32-unknown-unknown',
        '--crate-type',
        'cdylib',
        '-C',
        'opt-level=s',
        '-C',
        'strip=debuginfo',
        '--crate-name',
        name,
        '-o',
        out,
        source,
      ],
      { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' },
    );
  } catch (err) {
    throw new Error(`Rust plugin ${name} failed to build:\n${err.stderr ?? err.message}`);
  }
}

/** cargo, offline, against the Debian crates; the target folder stays (plugins/cargo/target) for quick rebuilds. */
function buildCargo(name, out) {
  const crateDir = join(pluginsDir, 'cargo', name);
  const targetDir = join(pluginsDir, 'cargo', 'target');
  try {
    execFileSync(cargo, ['build', '--release', '--offline', '--target', 'wasm32-unknown-unknown', '--target-dir', targetDir], {
      cwd: crateDir,
      env: { ...process.env, RUSTC: rustc },
      stdio: ['ignore', 'inherit', 'pipe'],
      encoding: 'utf8',
    });
  } catch (err) {
    throw new Error(`Rust plugin ${name} failed to build with cargo:\n${err.stderr ?? err.message}`);
  }
  writeFileSync(out, readFileSync(join(targetDir, 'wasm32-unknown-unknown', 'release', `${name}.wasm`)));
}

main().catch((err) => {
  console.error(`plugins: ${err.message}`);
  process.exit(1);
});
