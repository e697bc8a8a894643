'use strict';

// The real @hapi/iron, driven by tests/compat/test_iron.py.
//
//   node tests/compat/node_iron.js           one JSON request per stdin line, one reply per line
//   node tests/compat/node_iron.js vectors   print tests/vectors/iron.json
//
// Requests: {"op": "seal", "object", "password", "now", "ttl", "salts"}
//           {"op": "unseal", "sealed", "password", "now", "skew", "offset"}
//           {"op": "stringify", "object"}
//           {"op": "version"}
// "now" and "ttl" are milliseconds; "now" replaces Date.now() during the call (iron reads
// the clock once, synchronously, on entry). "salts" is {"encryption", "integrity", "iv" (hex)}.
// {"$buffer": "<hex>"} anywhere in a password stands for a Buffer.
// Replies: {"ok": true, "result": ...} or {"ok": false, "error": "<iron's message>"}.
// Packages come from tests/node/node_modules (`make node-deps`).

const Path = require('path');
const Readline = require('readline');

const nodeDir = Path.join(__dirname, '..', 'node');
const Iron = require(require.resolve('@hapi/iron', { paths: [nodeDir] }));
const ironVersion = require(require.resolve('@hapi/iron/package.json', { paths: [nodeDir] })).version;


const revive = function (value) {

    if (value && typeof value === 'object') {
        if (typeof value.$buffer === 'string') {
            return Buffer.from(value.$buffer, 'hex');
        }

        const out = {};
        for (const key of Object.keys(value)) {
            out[key] = revive(value[key]);
        }

        return out;
    }

    return value;
};


const atTime = async function (now, fn) {

    const realNow = Date.now;
    if (typeof now === 'number') {
        Date.now = () => now;
    }

    try {
        return await fn();
    }
    finally {
        Date.now = realNow;
    }
};


const sealOptions = function (request) {

    const salts = request.salts || {};
    return {
        ...Iron.defaults,
        ttl: request.ttl || 0,
        encryption: {
            ...Iron.defaults.encryption,
            ...(salts.encryption ? { salt: salts.encryption } : {}),
            ...(salts.iv ? { iv: Buffer.from(salts.iv, 'hex') } : {})
        },
        integrity: {
            ...Iron.defaults.integrity,
            ...(salts.integrity ? { salt: salts.integrity } : {})
        }
    };
};


const handle = async function (request) {

    switch (request.op) {
        case 'seal':
            return await atTime(request.now, () => Iron.seal(request.object, revive(request.password), sealOptions(request)));
        case 'unseal': {
            const options = {
                ...Iron.defaults,
                ...(request.skew !== undefined ? { timestampSkewSec: request.skew } : {}),
                ...(request.offset !== undefined ? { localtimeOffsetMsec: request.offset } : {})
            };
            return await atTime(request.now, () => Iron.unseal(request.sealed, revive(request.password), options));
        }

        case 'stringify':
            return JSON.stringify(request.object);
        case 'version':
            return { iron: ironVersion, node: process.version };
        default:
            throw new Error('unknown op: ' + request.op);
    }
};


const serve = async function () {

    const lines = Readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
        if (!line.trim()) {
            continue;
        }

        let reply;
        try {
            reply = { ok: true, result: await handle(JSON.parse(line)) };
        }
        catch (err) {
            reply = { ok: false, error: String(err && err.message) };
        }

        process.stdout.write(JSON.stringify(reply) + '\n');
    }
};


// Known-answer vectors: fixed passwords, salts, IVs and clock, so the file only changes
// when iron does. "expect" is what donjon must conclude, written by hand.

const hex = (label, bytes) => require('crypto').createHash('sha256').update('donjon iron vectors ' + label).digest('hex').slice(0, bytes * 2);

const vectors = async function () {

    const T0 = 1800000000000;
    const HOUR = 3600 * 1000;
    const pw = {
        main: 'm4Lw2Q9sVx7KpR3tYb8NcZ1eHj5UgD6fA0iOq',
        k1: 'k1-Jd83hQp0sLm2Vx9RtYb7NcZ4eWq1Ua6fGo',
        k2: 'k2-Zr5tYb8NcQ1eHj3UgD6fA0iOm4Lw2Q9sVx7K',
        other: 'another-password-that-is-long-enough-0123',
        unicode: 'pässwörd-🔐-ünïcödé-long-enough-for-iron'
    };
    const key = { $buffer: hex('raw key', 32) };
    const salts = (label) => ({ encryption: hex(label + '/enc', 32), integrity: hex(label + '/mac', 32), iv: hex(label + '/iv', 16) });
    const session = { user: { id: 42, name: 'Zoë', roles: ['admin', 'user'] }, csrf: 'c0ffee', n: 0.1, ok: true, none: null };

    const specs = [
        { name: 'plain_object', object: session, password: pw.main },
        { name: 'top_level_string', object: 'hello, iron', password: pw.main },
        { name: 'top_level_null', object: null, password: pw.main },
        { name: 'top_level_array', object: [1, 2.5, 'three', [], {}], password: pw.main },
        { name: 'top_level_number', object: -12345.678e-9, password: pw.main },
        { name: 'empty_object', object: {}, password: pw.main },
        { name: 'unicode_and_escapes', object: { 'ключ': 'значение', emoji: '🙂 \u2028 \u0000 \u001f "q" \\ \t\n', lone: '\ud800x' }, password: pw.main },
        { name: 'js_key_order_and_numbers', object: { b: 1, 10: 2, 2: 3, a: [1e21, 1e-7, 123456789012345680000, 5e-324, -0, 0.000001] }, password: pw.main },
        { name: 'unicode_password', object: session, password: pw.unicode },
        { name: 'password_id', object: session, password: { id: 'k2', secret: pw.k2 }, unsealWith: { k1: pw.k1, k2: pw.k2 } },
        { name: 'password_id_separate_secrets', object: session, password: { id: 'k1', encryption: pw.k1, integrity: pw.other }, unsealWith: { k1: { encryption: pw.k1, integrity: pw.other } } },
        { name: 'no_id_uses_default', object: session, password: pw.k1, unsealWith: { default: pw.k1, k2: pw.k2 } },
        { name: 'buffer_password', object: session, password: key, noSalts: true },
        { name: 'ttl_valid', object: session, password: pw.main, ttl: HOUR, at: T0 + HOUR / 2 },
        { name: 'ttl_within_skew', object: session, password: pw.main, ttl: HOUR, at: T0 + HOUR + 59 * 1000 },
        { name: 'ttl_expired', object: session, password: pw.main, ttl: HOUR, at: T0 + HOUR + 60 * 1000, expect: { verdict: 'expired', reason: 'expired' } },
        { name: 'yar_cookie', object: { id: '2f7b6c1e-4d7e-4f0a-9d7c-3c2b1a0f9e8d', _store: { visits: 3, _flash: { info: ['saved'] } } }, password: pw.main },
        { name: 'yar_cookie_server_side', object: { id: '2f7b6c1e-4d7e-4f0a-9d7c-3c2b1a0f9e8d' }, password: pw.main }
    ];

    const out = [];
    for (const spec of specs) {
        const s = spec.noSalts ? { iv: hex(spec.name + '/iv', 16) } : salts(spec.name);
        const sealed = await atTime(T0, () => Iron.seal(spec.object, revive(spec.password), sealOptions({ ttl: spec.ttl, salts: s })));
        out.push({ spec, sealed, salts: s });
    }

    const base = out[0].sealed;
    const parts = base.split('*');
    const tamper = (i) => {

        const p = parts.slice();
        p[i] = p[i].slice(0, -1) + (p[i].slice(-1) === 'A' ? 'B' : 'A');
        return p.join('*');
    };

    const bad = [
        { name: 'tampered_password_id', sealed: base.replace('Fe26.2**', 'Fe26.2*x*'), password: { default: pw.main, x: pw.main }, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'tampered_encryption_salt', sealed: tamper(2), password: pw.main, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'tampered_iv', sealed: tamper(3), password: pw.main, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'tampered_ciphertext', sealed: tamper(4), password: pw.main, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'tampered_hmac_salt', sealed: tamper(6), password: pw.main, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'tampered_hmac', sealed: tamper(7), password: pw.main, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'added_expiration', sealed: parts.slice(0, 5).concat(['9999999999999'], parts.slice(6)).join('*'), password: pw.main, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'wrong_password', sealed: base, password: pw.other, expect: { verdict: 'forged', reason: 'bad_hmac' } },
        { name: 'unknown_password_id', sealed: out.find((o) => o.spec.name === 'password_id').sealed, password: { k1: pw.k1 }, expect: { verdict: 'forged', reason: 'unknown_password_id' } },
        { name: 'missing_default_password', sealed: base, password: { k1: pw.k1 }, expect: { verdict: 'forged', reason: 'unknown_password_id' } },
        { name: 'wrong_prefix', sealed: base.replace('Fe26.2', 'Fe26.1'), password: pw.main, expect: { verdict: 'malformed', reason: 'prefix' } },
        { name: 'seven_fields', sealed: parts.slice(0, 7).join('*'), password: pw.main, expect: { verdict: 'malformed', reason: 'field_count' } },
        { name: 'bad_expiration', sealed: parts.slice(0, 5).concat(['12a'], parts.slice(6)).join('*'), password: pw.main, expect: { verdict: 'malformed', reason: 'expiration' } },
        { name: 'empty', sealed: '', password: pw.main, expect: { verdict: 'malformed', reason: 'field_count' } }
    ];

    const vectorsOut = [];
    for (const { spec, sealed, salts: s } of out) {
        const password = spec.unsealWith || spec.password;
        const now = spec.at || T0;
        let node;
        try {
            await atTime(now, () => Iron.unseal(sealed, revive(password), Iron.defaults));
            node = { ok: true };
        }
        catch (err) {
            node = { ok: false, error: err.message };
        }

        vectorsOut.push({
            name: spec.name,
            sealed,
            password,
            now,
            expect: spec.expect || { verdict: 'valid' },
            node,
            seal: { object: spec.object, json: JSON.stringify(spec.object), password: spec.password, now: T0, ttl: spec.ttl || 0, salts: s }
        });
    }

    for (const spec of bad) {
        let node;
        try {
            await atTime(T0, () => Iron.unseal(spec.sealed, revive(spec.password), Iron.defaults));
            node = { ok: true };
        }
        catch (err) {
            node = { ok: false, error: err.message };
        }

        vectorsOut.push({ name: spec.name, sealed: spec.sealed, password: spec.password, now: T0, expect: spec.expect, node, seal: null });
    }

    const doc = {
        comment: 'Generated by `node tests/compat/node_iron.js vectors` with the real @hapi/iron; do not edit by hand.',
        iron: ironVersion,
        vectors: vectorsOut
    };
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
};


(process.argv[2] === 'vectors' ? vectors() : serve()).catch((err) => {

    process.stderr.write(String(err && err.stack) + '\n');
    process.exit(1);
});
