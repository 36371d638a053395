// Load generator for the JavaScript client, the counterpart of `rtm-load` (benches/) for the
// Rust one, with the same method so that both can be compared in one run against one server.
//
//   node bench/load.mjs --url ws://127.0.0.1:4434/rtm --workload fanout --rate 1000 --secs 10
//   node bench/load.mjs --url ws://127.0.0.1:4434/rtm --workload throughput --secs 5
//
// fanout: one publisher and one subscriber (two clients in this process), open loop: message i
//   is sent at start + i / rate whatever happened to earlier ones, carries its scheduled time,
//   and the subscriber records receive time - scheduled time (no coordinated omission).
// throughput: the publisher keeps --window publishes in flight for --secs; the rate at which
//   the subscriber receives them.
// Both print one JSON line: latency percentiles (ms), delivered count, and this process's CPU
// time per delivered message (user + system, µs), which a busy machine barely moves.

import { performance } from 'node:perf_hooks';
import AgoraRTM from '../dist/esm/index.js';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const url = args.url ?? 'ws://127.0.0.1:4434/rtm';
const workload = args.workload ?? 'fanout';
const rate = Number(args.rate ?? 1000);
const secs = Number(args.secs ?? 10);
const size = Number(args.size ?? 100);
const windowSize = Number(args.window ?? 256);
const warmup = Number(args.warmup ?? 1);
const app = args.app ?? 'bench';
const channel = `load-${process.pid}`;

const config = { privateConfig: { serviceType: ['MESSAGE'], accessPointHosts: [url] } };
const pub = new AgoraRTM.RTM(app, `pub${process.pid}`, config);
const sub = new AgoraRTM.RTM(app, `sub${process.pid}`, config);
await pub.login();
await sub.login();
await sub.subscribe(channel, { withPresence: false });

const pad = 'x'.repeat(Math.max(0, size - 36));
const latencies = [];
// From the moment publish() was called: without the lateness of Node's timers (about 1 ms),
// which the open-loop figure above counts against the client, as it should.
const fromCall = [];
let received = 0;
let resolveDone;
const done = new Promise((r) => (resolveDone = r));
let expected = Infinity;
let lastReceive = 0;
sub.addEventListener('message', (e) => {
  const [scheduledText, calledText] = e.message.split(' ', 2);
  const scheduled = Number(scheduledText);
  // Messages scheduled in the warm-up are delivered but not measured.
  if (scheduled >= t0 + warmup * 1000) {
    const now = performance.now();
    latencies.push(now - scheduled);
    fromCall.push(now - Number(calledText));
  }
  received += 1;
  lastReceive = performance.now();
  if (received >= expected) resolveDone();
});

const t0 = performance.now() + 0;
let cpu0 = process.cpuUsage();
let measured0 = 0;
setTimeout(() => {
  cpu0 = process.cpuUsage();
  measured0 = received;
}, warmup * 1000);
let sent = 0;
let failed = 0;
if (workload === 'fanout') {
  const total = Math.round(rate * (secs + warmup));
  expected = total;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && t0 + (sent * 1000) / rate <= now) {
        const scheduled = t0 + (sent * 1000) / rate;
        pub.publish(channel, `${scheduled.toFixed(3)} ${performance.now().toFixed(3)} ${pad}`).catch(() => (failed += 1));
        sent += 1;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(0, t0 + (sent * 1000) / rate - performance.now()));
    };
    tick();
  });
} else {
  const end = t0 + (secs + warmup) * 1000;
  let inFlight = 0;
  await new Promise((resolve) => {
    const pump = () => {
      while (inFlight < windowSize && performance.now() < end) {
        inFlight += 1;
        sent += 1;
        pub
          .publish(channel, `${performance.now().toFixed(3)} ${performance.now().toFixed(3)} ${pad}`)
          .catch(() => (failed += 1))
          .finally(() => {
            inFlight -= 1;
            if (performance.now() < end) pump();
            else if (inFlight === 0) resolve();
          });
      }
    };
    pump();
  });
  expected = sent - failed;
  if (received >= expected) resolveDone();
}
await Promise.race([done, new Promise((r) => setTimeout(r, 10_000))]);
// Measured from the end of the warm-up to the last message received.
const elapsed = (lastReceive - t0) / 1000 - warmup;
const cpu = process.cpuUsage(cpu0);
await pub.logout();
await sub.logout();

latencies.sort((a, b) => a - b);
fromCall.sort((a, b) => a - b);
const pctOf = (list, p) => (list.length ? Number(list[Math.min(list.length - 1, Math.floor((p / 100) * list.length))].toFixed(3)) : null);
const pct = (p) => pctOf(latencies, p);
const report = {
  client: 'js',
  node: process.version,
  url,
  workload,
  rate: workload === 'fanout' ? rate : null,
  size,
  sent,
  failed,
  delivered: received,
  msgs_per_sec: Math.round((received - measured0) / elapsed),
  p50_ms: pct(50),
  p90_ms: pct(90),
  p99_ms: pct(99),
  from_call_p50_ms: pctOf(fromCall, 50),
  from_call_p99_ms: pctOf(fromCall, 99),
  max_ms: latencies.length ? Number(latencies[latencies.length - 1].toFixed(3)) : null,
  // Both clients live in this process: its CPU covers one publish and one receive per message.
  cpu_us_per_message: received > measured0 ? Number(((cpu.user + cpu.system) / (received - measured0)).toFixed(2)) : null,
};
console.log(JSON.stringify(report));
process.exit(0);
