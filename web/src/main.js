// The upload page: stock Uppy sends each file through the API's S3 multipart routes
// (companionEndpoint: <origin>/uploads), straight to S3 through presigned URLs; then the page
// follows the import job until its commit appears. The API server that serves this page sets
// the cookie that authenticates every request here (same origin, so fetch sends it).
import AwsS3 from '@uppy/aws-s3'
import Uppy from '@uppy/core'
import GoldenRetriever from '@uppy/golden-retriever'

const MiB = 1024 * 1024
const PART_BYTES = 5 * MiB // S3's smallest part; the tests rely on a 12 MiB file being 3 parts
const POLL_MS = 400
const PENDING = 'sluiceway.pending-imports' // keys of uploaded files whose import we still follow
const FINAL = new Set(['completed', 'failed', 'cancelled'])

const $ = (id) => document.getElementById(id)
const form = $('form')
const datasetInput = $('dataset')
const fileInput = $('file')
const drop = $('drop')
const button = $('upload')
const list = $('files')
const statusEl = $('status')
const commitEl = $('commit')
const messageEl = $('message')

const uppy = new Uppy({ id: 'sluiceway', autoProceed: false })
  .use(AwsS3, {
    companionEndpoint: `${window.location.origin}/uploads`,
    shouldUseMultipart: true,
    getChunkSize: () => PART_BYTES,
  })
  // Resume after a reload: file blobs go to IndexedDB (no service worker), upload state
  // (S3 upload id and key) to IndexedDB metadata; Uppy then lists the parts S3 already has.
  .use(GoldenRetriever, { indexedDB: { maxFileSize: 4096 * MiB, maxTotalSize: 8192 * MiB } })

// ---- per-file rows ------------------------------------------------------------------------

const rows = new Map() // uppy file id or object key -> {li, bar, text}

function row(id, name) {
  let r = rows.get(id)
  if (r) return r
  const li = document.createElement('li')
  li.dataset.fileId = id
  const label = document.createElement('div')
  label.className = 'name'
  label.textContent = name
  const bar = document.createElement('progress')
  bar.className = 'upload-progress'
  bar.max = 100
  bar.value = 0
  const text = document.createElement('div')
  text.className = 'file-status'
  li.append(label, bar, text)
  list.append(li)
  r = { li, bar, text }
  rows.set(id, r)
  return r
}

function fmtBytes(n) {
  return n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`
}

function showFile(file) {
  const r = row(file.id, file.name)
  const p = file.progress || {}
  if (p.bytesTotal) {
    r.bar.value = Math.round((100 * (p.bytesUploaded || 0)) / p.bytesTotal)
    r.text.textContent = p.uploadComplete
      ? 'uploaded'
      : `uploading ${fmtBytes(p.bytesUploaded || 0)} of ${fmtBytes(p.bytesTotal)}`
  } else {
    r.text.textContent = file.isGhost ? 'choose this file again to resume' : 'ready'
  }
}

function refreshButton() {
  const waiting = uppy.getFiles().some((f) => !f.progress.uploadComplete)
  button.disabled = !waiting || !datasetInput.value.trim()
}

// ---- adding files ---------------------------------------------------------------------------

function addFiles(files) {
  messageEl.textContent = ''
  for (const data of files) {
    try {
      uppy.addFile({ name: data.name, type: data.type || 'text/csv', data, source: 'local' })
    } catch (err) {
      messageEl.textContent = err.message
    }
  }
}

fileInput.addEventListener('change', () => {
  addFiles(Array.from(fileInput.files))
  fileInput.value = ''
})
drop.addEventListener('dragover', (e) => {
  e.preventDefault()
  drop.classList.add('over')
})
drop.addEventListener('dragleave', () => drop.classList.remove('over'))
drop.addEventListener('drop', (e) => {
  e.preventDefault()
  drop.classList.remove('over')
  addFiles(Array.from(e.dataTransfer.files))
})
datasetInput.addEventListener('input', refreshButton)

uppy.on('file-added', (file) => {
  // the API reads metadata.dataset and metadata.size
  uppy.setFileMeta(file.id, { size: file.size })
  showFile(file)
  refreshButton()
})
uppy.on('file-removed', (file) => {
  rows.get(file.id)?.li.remove()
  rows.delete(file.id)
  refreshButton()
})

form.addEventListener('submit', (e) => {
  e.preventDefault()
  const dataset = datasetInput.value.trim()
  if (!dataset) return
  for (const file of uppy.getFiles()) {
    if (!file.progress.uploadStarted) uppy.setFileMeta(file.id, { dataset, size: file.size })
  }
  button.disabled = true
  statusEl.textContent = 'uploading'
  commitEl.textContent = ''
  uppy.upload().catch((err) => {
    messageEl.textContent = `Upload failed: ${err.message}`
  })
})

// ---- upload progress ------------------------------------------------------------------------

uppy.on('upload-progress', (file) => showFile(uppy.getFile(file.id) || file))
uppy.on('upload-error', (file, err) => {
  const r = row(file.id, file.name)
  r.text.textContent = `upload failed: ${err?.message || err}`
  r.text.classList.add('error')
  statusEl.textContent = 'upload failed'
  refreshButton()
})
uppy.on('upload-success', (file, response) => {
  showFile(uppy.getFile(file.id) || file)
  const key = response?.body?.key
  if (!key) return
  rows.set(key, rows.get(file.id))
  follow({ key, name: file.name, dataset: file.meta.dataset })
})

// ---- import progress: the job that the upload started, until its commit -------------------

const imports = new Map() // key -> {name, dataset, job}

function loadPending() {
  try {
    return JSON.parse(localStorage.getItem(PENDING) || '[]')
  } catch {
    return []
  }
}

function savePending() {
  const pending = [...imports.entries()]
    .filter(([, v]) => !FINAL.has(v.job?.status))
    .map(([key, v]) => ({ key, name: v.name, dataset: v.dataset }))
  localStorage.setItem(PENDING, JSON.stringify(pending))
}

function follow({ key, name, dataset }) {
  if (imports.has(key)) return
  imports.set(key, { name, dataset, job: null })
  row(key, name)
  savePending()
  showImports()
  if (!polling) poll()
}

async function getJson(path) {
  const response = await fetch(path, { credentials: 'same-origin' })
  const body = await response.json().catch(() => ({}))
  if (!response.ok) throw new Error(body.message || `${path}: HTTP ${response.status}`)
  return body
}

let polling = false

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const unfinished = () => [...imports.entries()].filter(([, v]) => !FINAL.has(v.job?.status))

async function poll() {
  polling = true
  try {
    while (unfinished().length > 0) {
      try {
        const open = unfinished()
        if (open.some(([, v]) => !v.job)) {
          // the upload's job exists from the moment the upload was created; find it by its key
          for (const [key, v] of open) {
            if (v.job) continue
            const { jobs } = await getJson(`/jobs?key=${encodeURIComponent(key)}`)
            v.job = jobs[0] || null
          }
        }
        for (const [, v] of open) {
          if (v.job) v.job = await getJson(`/jobs/${v.job.job_id}`)
        }
        if (messageEl.textContent.startsWith('Could not follow')) messageEl.textContent = ''
      } catch (err) {
        messageEl.textContent = `Could not follow the import (retrying): ${err.message}`
        await sleep(2000)
      }
      savePending()
      showImports()
      if (unfinished().length > 0) await sleep(POLL_MS)
    }
  } finally {
    polling = false
  }
}

function showImports() {
  const all = [...imports.entries()]
  for (const [key, v] of all) {
    const r = row(key, v.name)
    const job = v.job
    if (!job) {
      r.text.textContent = 'uploaded; waiting for the import job'
      continue
    }
    const pct = job.progress?.percent
    const commit = job.output_summary?.commit_id
    r.text.textContent =
      `import ${job.status}` +
      (pct != null && job.status !== 'completed' ? ` (${pct}%)` : '') +
      (commit ? `: commit ${commit} in ${job.dataset}` : '') +
      (job.error_message ? `: ${job.error_message}` : '')
    r.text.classList.toggle('error', job.status === 'failed')
    r.li.dataset.jobId = job.job_id
    if (commit) r.li.dataset.commit = commit
  }
  const statuses = all.map(([, v]) => v.job?.status || 'pending')
  if (statuses.length === 0) return
  const failed = statuses.find((s) => s === 'failed' || s === 'cancelled')
  statusEl.textContent =
    failed || (statuses.every((s) => s === 'completed') ? 'completed' : statuses.includes('running') ? 'running' : 'pending')
  if (statuses.every((s) => FINAL.has(s))) {
    commitEl.textContent = all
      .map(([, v]) => v.job?.output_summary?.commit_id)
      .filter(Boolean)
      .join(' ')
  }
}

// ---- after a reload ---------------------------------------------------------------------------

uppy.on('restored', () => {
  const files = uppy.getFiles()
  const dataset = files.map((f) => f.meta.dataset).find(Boolean)
  if (dataset && !datasetInput.value) datasetInput.value = dataset
  files.forEach(showFile)
  refreshButton()
  if (uppy.getState().recoveredState && files.some((f) => !f.isGhost && !f.progress.uploadComplete)) {
    statusEl.textContent = 'uploading (resumed)'
    uppy.emit('restore-confirmed') // GoldenRetriever resumes: S3 lists the parts it already has
  }
})

for (const pending of loadPending()) follow(pending)
refreshButton()
window.sluicewayUppy = uppy // for debugging from the console
