// The browser tests drive Debian's Chromium (/usr/bin/chromium) with playwright-core.
//   node test/browser/chromium.mjs --install   (npm test) install it with apt-get when missing, as
//                                               root on Debian; elsewhere fail and say what to install
// CHROMIUM_PATH overrides the browser used.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

if (!existsSync(chromium)) {
  if (!process.argv.includes('--install') || process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    console.error(`browser tests: ${chromium} not found; install the Debian package chromium (or set CHROMIUM_PATH)`);
    process.exit(1);
  }
  console.log(`browser tests: ${chromium} not found; installing the Debian package chromium with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', 'chromium'], { stdio: 'inherit', env });
  if (!existsSync(chromium)) {
    console.error(`browser tests: ${chromium} still missing after installing chromium`);
    process.exit(1);
  }
}
