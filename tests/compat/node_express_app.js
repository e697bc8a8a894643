// A real Express app: express + express-session + connect-redis + redis.
//
// The Python twin lives in tests/compat/test_express.py (make_app); both
// serve the same routes on one Redis with one secret list:
//
//   GET  /count          n += 1; -> {"n", "user"}
//   POST /login?user=u   regenerate, then user = u; -> {"user"}
//   POST /logout         destroy the session and clear the cookie; -> {"ok"}
//   GET  /whoami         -> {"user", "n"}
//
// Configuration (environment): REDIS_URL, SECRETS (a JSON list of strings),
// COOKIE_NAME (connect.sid), PREFIX (sess:), MAX_AGE_MS (3600000), ROLLING (0).
// Listens on 127.0.0.1, on PORT or a free port, and prints "READY <port>".
'use strict'

const path = require('path')

const nodeDir = path.join(__dirname, '..', 'node')
const req = (name) => require(require.resolve(name, { paths: [nodeDir] }))
const express = req('express')
const session = req('express-session')
const { RedisStore } = req('connect-redis')
const { createClient } = req('redis')

async function main () {
  const name = process.env.COOKIE_NAME || 'connect.sid'
  const client = createClient({ url: process.env.REDIS_URL })
  client.on('error', (err) => console.error('redis client error:', err.message))
  await client.connect()

  const app = express()
  app.use(session({
    name,
    store: new RedisStore({ client, prefix: process.env.PREFIX || 'sess:' }),
    secret: JSON.parse(process.env.SECRETS),
    resave: false,
    saveUninitialized: false,
    rolling: process.env.ROLLING === '1',
    cookie: { maxAge: Number(process.env.MAX_AGE_MS || 3600000) }
  }))

  app.get('/count', (req, res) => {
    req.session.n = (req.session.n || 0) + 1
    res.json({ n: req.session.n, user: req.session.user || null })
  })

  app.post('/login', (req, res, next) => {
    const user = String(req.query.user || '')
    req.session.regenerate((err) => {
      if (err) return next(err)
      req.session.user = user
      res.json({ user })
    })
  })

  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => {
      if (err) return next(err)
      res.clearCookie(name, { path: '/' })
      res.json({ ok: true })
    })
  })

  app.get('/whoami', (req, res) => {
    res.json({ user: req.session.user || null, n: req.session.n || 0 })
  })

  const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
    process.stdout.write(`READY ${server.address().port}\n`)
  })

  const stop = () => {
    server.close(() => { client.quit().finally(() => process.exit(0)) })
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
