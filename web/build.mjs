// Build the upload page into dist/: index.html, bundle.js (Uppy, bundled: its packages use bare
// imports), style.css. `sluiceway up` serves dist/ at /app/.
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { build } from 'esbuild'

const here = new URL('.', import.meta.url)
const dist = new URL('dist/', here)
await rm(dist, { recursive: true, force: true })
await mkdir(dist, { recursive: true })
await build({
  entryPoints: [new URL('src/main.js', here).pathname],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  outfile: new URL('bundle.js', dist).pathname,
  logLevel: 'warning',
})
await copyFile(new URL('index.html', here), new URL('index.html', dist))
await copyFile(new URL('src/style.css', here), new URL('style.css', dist))
console.log('web/dist: index.html bundle.js style.css')
