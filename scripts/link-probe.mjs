#!/usr/bin/env node
// Tiny TCP link probe between two test hosts (see scripts/test-hosts.sh): round-trip time of
// 1-byte ping-pongs, then the throughput of a fixed number of bytes sent client -> server.
// Both sides are bounded (one session, fixed bytes, a timeout) and then exit.
//
//   node scripts/link-probe.mjs server [--port 5201] [--bind 0.0.0.0] [--timeout 60]
//   node scripts/link-probe.mjs client --host HOST [--port 5201] [--bytes 268435456]
//                                      [--pings 200] [--chunk 1048576] [--timeout 60] [--json]
//
// e.g. scripts/test-hosts.sh exec lt-h1 node scripts/link-probe.mjs server &
//      scripts/test-hosts.sh exec lt-h0 node scripts/link-probe.mjs client --host lt-h1
//
// Protocol: client sends one JSON line {"pings":P,"bytes":B}; then P single bytes, each sent
// after the server echoed the previous one; then B bytes; the server answers one JSON line
// when it has counted all B bytes. The client's time from its first bulk byte to that answer
// is the transfer time (it includes one RTT, negligible for large B).
// The client retries connecting until the deadline, so both can be started at once.
import net from 'node:net';

function parseArgs(argv) {
  const [mode, ...rest] = argv;
  const opts = { port: 5201, bind: '0.0.0.0', host: '', bytes: 256 * 1024 * 1024, pings: 200,
    chunk: 1024 * 1024, timeout: 60, json: false };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    const key = a.replace(/^--/, '');
    if (a === '--json') { opts.json = true; continue; }
    if (!a.startsWith('--') || !(key in opts)) throw new Error(`unknown option ${a}`);
    const v = rest[++i];
    if (v === undefined) throw new Error(`${a} needs a value`);
    opts[key] = typeof opts[key] === 'number' ? Number(v) : v;
    if (typeof opts[key] === 'number' && !(Number.isFinite(opts[key]) && opts[key] >= 0)) {
      throw new Error(`${a}: bad number ${v}`);
    }
  }
  return { mode, opts };
}

function deadline(seconds, what) {
  const t = setTimeout(() => {
    console.error(`link-probe ${what}: timed out after ${seconds} s`);
    process.exit(2);
  }, seconds * 1000);
  t.unref();
}

function server(opts) {
  deadline(opts.timeout, 'server');
  const srv = net.createServer({ noDelay: true }, (sock) => {
    srv.close(); // one session only
    sock.setNoDelay(true);
    let header = Buffer.alloc(0);
    let cfg = null;
    let pingsLeft = 0;
    let bulkLeft = 0;
    let bulkStart = 0n;
    sock.on('data', (buf) => {
      if (!cfg) {
        header = Buffer.concat([header, buf]);
        const nl = header.indexOf(10);
        if (nl < 0) return;
        cfg = JSON.parse(header.subarray(0, nl).toString());
        pingsLeft = cfg.pings;
        bulkLeft = cfg.bytes;
        buf = header.subarray(nl + 1);
      }
      if (pingsLeft > 0 && buf.length > 0) {
        const n = Math.min(pingsLeft, buf.length);
        sock.write(buf.subarray(0, n)); // echo
        pingsLeft -= n;
        buf = buf.subarray(n);
      }
      if (pingsLeft === 0 && buf.length > 0) {
        if (bulkStart === 0n) bulkStart = process.hrtime.bigint();
        bulkLeft -= buf.length;
      }
      if (pingsLeft === 0 && bulkLeft <= 0) {
        const secs = bulkStart ? Number(process.hrtime.bigint() - bulkStart) / 1e9 : 0;
        sock.end(JSON.stringify({ received: cfg.bytes - bulkLeft, serverSeconds: secs }) + '\n');
        sock.removeAllListeners('data');
      }
    });
    sock.on('close', () => process.exit(0));
    sock.on('error', (e) => { console.error(`link-probe server: ${e.message}`); process.exit(1); });
  });
  srv.on('error', (e) => { console.error(`link-probe server: ${e.message}`); process.exit(1); });
  srv.listen(opts.port, opts.bind, () => console.log(`link-probe server listening on ${opts.bind}:${opts.port}`));
}

function connectWithRetry(opts, until) {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = net.connect({ host: opts.host, port: opts.port, noDelay: true });
      sock.once('connect', () => { sock.removeAllListeners('error'); resolve(sock); });
      sock.once('error', (e) => {
        sock.destroy();
        if (Date.now() < until && ['ECONNREFUSED', 'ECONNRESET'].includes(e.code)) setTimeout(attempt, 50);
        else reject(e);
      });
    };
    attempt();
  });
}

async function client(opts) {
  if (!opts.host) throw new Error('client needs --host');
  deadline(opts.timeout, 'client');
  const sock = await connectWithRetry(opts, Date.now() + opts.timeout * 1000);
  sock.setNoDelay(true);
  sock.on('error', (e) => { console.error(`link-probe client: ${e.message}`); process.exit(1); });
  let waiter = null;
  let inbox = Buffer.alloc(0);
  sock.on('data', (b) => { inbox = Buffer.concat([inbox, b]); if (waiter) waiter(); });
  const waitFor = (pred) => new Promise((res) => {
    const check = () => { if (pred()) { waiter = null; res(); } };
    waiter = check; check();
  });

  sock.write(JSON.stringify({ pings: opts.pings, bytes: opts.bytes }) + '\n');
  const rtts = [];
  const one = Buffer.from('p');
  for (let i = 0; i < opts.pings; i++) {
    const t0 = process.hrtime.bigint();
    sock.write(one);
    await waitFor(() => inbox.length >= 1);
    rtts.push(Number(process.hrtime.bigint() - t0) / 1e3); // microseconds
    inbox = inbox.subarray(1);
  }

  const chunk = Buffer.alloc(Math.max(1, Math.min(opts.chunk, opts.bytes || 1)), 0x5a);
  const t0 = process.hrtime.bigint();
  let left = opts.bytes;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    left -= n;
    if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
      await new Promise((res) => sock.once('drain', res));
    }
  }
  await waitFor(() => inbox.indexOf(10) >= 0);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const reply = JSON.parse(inbox.subarray(0, inbox.indexOf(10)).toString());
  sock.end();

  rtts.sort((a, b) => a - b);
  const q = (p) => rtts.length ? rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))] : NaN;
  const result = {
    host: opts.host, port: opts.port, bytes: opts.bytes, received: reply.received, seconds: secs,
    GBps: opts.bytes / secs / 1e9, Gbitps: (opts.bytes * 8) / secs / 1e9,
    rttUs: { pings: rtts.length, min: q(0), median: q(0.5), p99: q(0.99), max: rtts[rtts.length - 1] },
  };
  if (reply.received !== opts.bytes) {
    console.error(`link-probe client: server counted ${reply.received} of ${opts.bytes} bytes`);
    process.exitCode = 1;
  }
  if (opts.json) console.log(JSON.stringify(result));
  else {
    const f = (x) => x.toFixed(1);
    console.log(`link-probe ${opts.host}:${opts.port}: ${opts.bytes} B in ${secs.toFixed(3)} s = ` +
      `${result.GBps.toFixed(3)} GB/s (${result.Gbitps.toFixed(3)} Gbit/s); ` +
      `RTT us (n=${rtts.length}) min ${f(result.rttUs.min)} median ${f(result.rttUs.median)} ` +
      `p99 ${f(result.rttUs.p99)} max ${f(result.rttUs.max)}`);
  }
}

try {
  const { mode, opts } = parseArgs(process.argv.slice(2));
  if (mode === 'server') server(opts);
  else if (mode === 'client') await client(opts);
  else {
    console.error('usage: link-probe.mjs server|client [options]  (see the header of this file)');
    process.exit(64);
  }
} catch (e) {
  console.error(`link-probe: ${e.message}`);
  process.exit(1);
}
