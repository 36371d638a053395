// Builds the package: ESM and declarations with tsc (dist/esm, dist/types), and the
// single-file IIFE bundle for a <script> tag with esbuild (dist/rtm-sdk.iife.min.js, global
// `AgoraRTM`, as the reference's CDN file). Usage: node scripts/build.mjs
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });

const common = {
  entryPoints: [path.join(root, 'src', 'iife.ts')],
  bundle: true,
  format: 'iife',
  globalName: 'AgoraRTM',
  target: ['es2022'],
  platform: 'browser',
  // Browsers have WebSocket; the `ws` package is only for Node, which uses the ESM build.
  external: ['ws'],
  legalComments: 'none',
  // The bundle's global is the default export itself, as in the reference's CDN file.
  footer: { js: 'AgoraRTM = AgoraRTM.default;' },
  logLevel: 'warning',
};
await esbuild.build({ ...common, minify: true, outfile: path.join(root, 'dist', 'rtm-sdk.iife.min.js') });
await esbuild.build({ ...common, minify: false, outfile: path.join(root, 'dist', 'rtm-sdk.iife.js') });
