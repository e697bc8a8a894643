// The oracle for donjon.compat.express.ExpressSigner: the real Node packages.
//
// Reads JSON lines on stdin, answers one JSON line per request on stdout.
// Secrets are {"s": "<utf-8 text>"} or {"hex": "<bytes>"}.
//
//   {"op": "sign", "id": ..., "secrets": [...], "name": ...}
//       -> {"v10": cookie-signature 1.0.7 (express-session's own copy),
//           "v12": cookie-signature 1.2.2 (the top-level package),
//           "setCookie": the Set-Cookie header the real express-session
//                        middleware sends for a new session with that id}
//   {"op": "get", "header": "<Cookie header>", "secrets": [...], "name": ...}
//       -> {"id": the session id the real express-session middleware looks
//                 up in its store for that request, or null}
//   {"op": "record", "id": ..., "secrets": [...], "name": ..., "cookie": {...}}
//       -> {"record": the JSON the store receives (what connect-redis writes)
//                     for a new session {n: 1} made with those cookie options,
//           "setCookie": the Set-Cookie header sent with it}
//   {"op": "unsign", "input": "<id>.<mac>", "secrets": [...]}
//       -> {"v10": ..., "v12": ...}: the first non-false unsign over the
//          secrets with each cookie-signature version, or false
//
// Run from anywhere: modules resolve from tests/node/node_modules.
'use strict'

const path = require('path')
const readline = require('readline')

const nodeDir = path.join(__dirname, '..', 'node')
const req = (name, from) => require(require.resolve(name, { paths: [from || nodeDir] }))
const session = req('express-session')
const esDir = path.dirname(require.resolve('express-session', { paths: [nodeDir] }))
const sig10 = req('cookie-signature', esDir) // the copy express-session itself uses
const sig12 = req('cookie-signature')

if (sig10 === sig12) throw new Error('expected two cookie-signature versions')

function secretOf (s) {
  if (typeof s.hex === 'string') return Buffer.from(s.hex, 'hex')
  return s.s
}

class Probe extends session.Store {
  get (sid, cb) { this.requested = sid; cb(null, null) }
  set (sid, sess, cb) { this.saved = JSON.stringify(sess); cb(null) }
  destroy (sid, cb) { cb(null) }
}

function fakeRes () {
  const headers = {}
  return {
    headers,
    getHeader (k) { return headers[k.toLowerCase()] },
    setHeader (k, v) { headers[k.toLowerCase()] = v },
    writeHead () {},
    write () { return true },
    end () { return true },
    _implicitHeader () {}
  }
}

function run (mw, reqObj, res) {
  let done = false
  mw(reqObj, res, (err) => { if (err) throw err; done = true })
  if (!done) throw new Error('express-session did not call next() synchronously')
}

function sign (msg) {
  const secrets = msg.secrets.map(secretOf)
  const store = new Probe()
  const mw = session({
    name: msg.name,
    secret: secrets,
    store,
    resave: false,
    saveUninitialized: true,
    genid: () => msg.id
  })
  const res = fakeRes()
  run(mw, { headers: {}, url: '/', originalUrl: '/' }, res)
  res.writeHead(200)
  const sc = res.headers['set-cookie']
  return {
    v10: sig10.sign(msg.id, secrets[0]),
    v12: sig12.sign(msg.id, secrets[0]),
    setCookie: Array.isArray(sc) ? sc.filter(Boolean) : sc
  }
}

function record (msg) {
  const store = new Probe()
  const mw = session({
    name: msg.name,
    secret: msg.secrets.map(secretOf),
    store,
    resave: false,
    saveUninitialized: false,
    genid: () => msg.id,
    cookie: msg.cookie
  })
  const url = (msg.cookie && msg.cookie.path) || '/'
  const reqObj = { headers: {}, url, originalUrl: url, connection: { encrypted: true } } // as over HTTPS
  const res = fakeRes()
  run(mw, reqObj, res)
  reqObj.session.n = 1
  res.writeHead(200)
  res.end()
  const sc = res.headers['set-cookie']
  return { record: store.saved, setCookie: Array.isArray(sc) ? sc.filter(Boolean) : sc }
}

function get (msg) {
  const store = new Probe()
  const mw = session({
    name: msg.name,
    secret: msg.secrets.map(secretOf),
    store,
    resave: false,
    saveUninitialized: false
  })
  const headers = msg.header === null ? {} : { cookie: msg.header }
  run(mw, { headers, url: '/', originalUrl: '/' }, fakeRes())
  return { id: store.requested === undefined ? null : store.requested }
}

function unsign (msg) {
  const secrets = msg.secrets.map(secretOf)
  const first = (sig) => {
    for (const s of secrets) {
      const r = sig.unsign(msg.input, s)
      if (r !== false) return r
    }
    return false
  }
  return { v10: first(sig10), v12: first(sig12) }
}

const ops = { sign, get, record, unsign }
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
const out = []
rl.on('line', (line) => {
  if (!line.trim()) return
  const msg = JSON.parse(line)
  let answer
  try {
    answer = ops[msg.op](msg)
  } catch (err) {
    answer = { error: String(err && err.message) }
  }
  out.push(JSON.stringify(answer))
})
rl.on('close', () => { process.stdout.write(out.join('\n') + (out.length ? '\n' : '')) })
