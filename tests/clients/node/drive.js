#!/usr/bin/env node
// Drives mpesa-node (Safaricom's own Node library, from npm) against a Daraja look-alike:
// OAuth token -> STK push -> STK query while the prompt is open -> STK query once settled ->
// Daraja's callback at a receiver this script runs on 127.0.0.1.
//
//   node drive.js --base http://127.0.0.1:8089 [--phone 254700000000] [--amount 1] [--timeout-ms 15000]
//
// Prints one JSON object on stdout (what each step returned) and exits 0; on any failure it prints
// {"error": "..."} and exits 1. Every request goes to --base and to the local receiver only.
'use strict'

const http = require('http')
const Mpesa = require('mpesa-node')

const SANDBOX_SHORTCODE = 174379
const SANDBOX_PASSKEY = 'bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919'

function args () {
  const out = { phone: '254700000000', amount: 1, timeoutMs: 15000 }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]]
    if (name === '--base') out.base = value
    else if (name === '--phone') out.phone = value
    else if (name === '--amount') out.amount = Number(value)
    else if (name === '--timeout-ms') out.timeoutMs = Number(value)
    else throw new Error(`unknown argument ${name}`)
  }
  if (!out.base) throw new Error('--base is required')
  const host = new URL(out.base).hostname
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(host)) throw new Error(`--base must be a loopback URL, got ${out.base}`)
  return out
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// axios 0.18 rejects non-2xx answers; keep Daraja's status and body either way.
async function call (promise) {
  try {
    const res = await promise
    return { status: res.status, data: res.data }
  } catch (err) {
    if (err.response) return { status: err.response.status, data: err.response.data }
    throw err
  }
}

const isPending = (q) =>
  (q.status === 500 && q.data && q.data.errorCode === '500.001.1001') ||
  (q.status === 200 && q.data && String(q.data.ResultCode) === '4999')

function startReceiver () {
  const callbacks = []
  let notify = () => {}
  const server = http.createServer((req, res) => {
    let raw = ''
    req.on('data', (chunk) => { raw += chunk })
    req.on('end', () => {
      let body = null
      try { body = JSON.parse(raw) } catch (_) { body = raw }
      callbacks.push({ path: req.url, contentType: req.headers['content-type'] || null, body })
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ ResultCode: 0, ResultDesc: 'Accepted' }))
      notify()
    })
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}/mpesa/callback`
      const waitFor = async (checkoutRequestId, deadline) => {
        for (;;) {
          const hit = callbacks.find((c) => c.body && c.body.Body && c.body.Body.stkCallback &&
            c.body.Body.stkCallback.CheckoutRequestID === checkoutRequestId)
          if (hit) return hit
          const left = deadline - Date.now()
          if (left <= 0) throw new Error(`no callback for ${checkoutRequestId} (got ${callbacks.length})`)
          await new Promise((resolve) => { notify = resolve; setTimeout(resolve, Math.min(left, 100)) })
        }
      }
      resolve({ server, url, waitFor })
    })
  })
}

async function main () {
  const opts = args()
  const receiver = await startReceiver()
  try {
    const mpesa = new Mpesa({
      consumerKey: process.env.MPESA_CONSUMER_KEY || 'simulator-demo-consumer-key',
      consumerSecret: process.env.MPESA_CONSUMER_SECRET || 'simulator-demo-consumer-secret',
      environment: 'sandbox',
      lipaNaMpesaShortCode: SANDBOX_SHORTCODE,
      lipaNaMpesaShortPass: SANDBOX_PASSKEY
    })
    mpesa.baseURL = opts.base // the one line that points the library away from sandbox.safaricom.co.ke

    const deadline = Date.now() + opts.timeoutMs
    const token = await call(mpesa.oAuth())
    const push = await call(mpesa.lipaNaMpesaOnline(Number(opts.phone), opts.amount, receiver.url, 'ORDER1', 'Test'))
    if (push.status !== 200) throw new Error(`push refused: ${JSON.stringify(push)}`)
    const id = push.data.CheckoutRequestID
    const pending = await call(mpesa.lipaNaMpesaQuery(id))
    let final = pending
    let queries = 1
    while (isPending(final)) {
      if (Date.now() > deadline) throw new Error(`still pending: ${JSON.stringify(final)}`)
      await sleep(100)
      final = await call(mpesa.lipaNaMpesaQuery(id))
      queries += 1
    }
    const callback = await receiver.waitFor(id, deadline)
    process.stdout.write(JSON.stringify({
      client: 'mpesa-node',
      version: require('mpesa-node/package.json').version,
      receiverUrl: receiver.url,
      token: { status: token.status, expiresIn: token.data.expires_in, tokenLength: String(token.data.access_token || '').length },
      push,
      pending,
      final,
      queries,
      callback
    }) + '\n')
  } finally {
    receiver.server.close()
  }
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String((err && err.stack) || err) }) + '\n')
  process.exit(1)
})
