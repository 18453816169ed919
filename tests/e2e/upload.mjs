// Drive the upload page in headless Chromium (playwright-core from web/node_modules).
// Usage: node upload.mjs '{"url": ".../app/", "dataset": "d", "file": "/tmp/x.csv",
//                          "reload": false, "chromium": "/usr/bin/chromium",
//                          "screenshot": "/tmp/page.png" (optional)}'
// Prints one JSON line: {commit, status, text, api, s3} (api: the API calls the page made,
// s3: the part uploads, each tagged with the page load it belongs to and its HTTP status).
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(new URL('../../web/package.json', import.meta.url))
const { chromium } = require('playwright-core')

const args = JSON.parse(process.argv[2])
const profile = mkdtempSync(join(tmpdir(), 'sluiceway-chromium-'))
const TIMEOUT = args.timeout_ms ?? 45_000

// a fresh profile (--user-data-dir) each run: IndexedDB starts empty
const context = await chromium.launchPersistentContext(profile, {
  executablePath: args.chromium ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
  ],
})
const api = []
const s3 = []
const console_ = []
let load = 0
try {
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(TIMEOUT)
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`))
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`))
  const apiOrigin = new URL(args.url).origin
  page.on('request', (r) => {
    const u = new URL(r.url())
    if (u.origin === apiOrigin && !u.pathname.startsWith('/app')) {
      api.push({ load, method: r.method(), path: u.pathname + u.search })
    } else if (r.method() === 'PUT' && u.searchParams.has('partNumber')) {
      const entry = { load, part: Number(u.searchParams.get('partNumber')), status: null }
      s3.push(entry)
      r.response().then(
        (res) => { entry.status = res ? res.status() : r.failure()?.errorText ?? 'failed' },
        () => {},
      )
    }
  })

  // Part signing for parts >= 2 is held (never answered) until the reload, so the reload
  // lands after exactly one part is in S3.
  const held = []
  const holdLaterParts = async (route) => {
    const part = Number(new URL(route.request().url()).pathname.split('/').pop())
    if (part >= 2) held.push(route)
    else await route.continue()
  }
  if (args.reload) await page.route(/\/uploads\/s3\/multipart\/[^/?]+\/\d+(\?|$)/, holdLaterParts)

  await page.goto(args.url)
  await page.fill('#dataset', args.dataset)
  await page.setInputFiles('#file', args.file)
  await page.click('#upload')

  if (args.reload) {
    await page.waitForResponse((r) => r.request().method() === 'PUT' && r.url().includes('partNumber=1'))
    await page.waitForFunction(() => document.querySelector('#files progress')?.value > 0)
    await page.waitForTimeout(1200) // GoldenRetriever saves its state at most every 500 ms
    await page.unroute(/\/uploads\/s3\/multipart\/[^/?]+\/\d+(\?|$)/, holdLaterParts)
    load = 1
    await page.reload()
    for (const route of held) await route.abort().catch(() => {})
  }

  await page.waitForFunction(
    () => {
      const status = document.getElementById('status').textContent
      return document.getElementById('commit').textContent.trim() !== '' ||
        /failed|cancelled/.test(status)
    },
    null,
    { timeout: TIMEOUT },
  )
  const result = await page.evaluate(() => ({
    commit: document.getElementById('commit').textContent.trim(),
    status: document.getElementById('status').textContent.trim(),
    text: document.querySelector('main').innerText,
  }))
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true })
  console.log(JSON.stringify({ ...result, api, s3 }))
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.stack || err), api, s3, console: console_ }))
  process.exitCode = 1
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
}
