// node ordered.mjs WORKREQ.json, with WF_NATS_URL from .wf/client.env in the environment:
// submits the WorkReq, executes it and prints each of its events until it ends.
import { readFileSync } from "node:fs";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

// nats.js takes no user:password from a URL: they go in the options
const url = new URL(process.env.WF_NATS_URL); // nats://client:PASSWORD@HOST:PORT
const nc = await connect({
  servers: url.host,
  user: decodeURIComponent(url.username),
  pass: decodeURIComponent(url.password),
});

async function call(subject, body) {
  const msg = await nc.request(subject, body, { timeout: 5000 });
  const code = msg.headers?.get("Nats-Service-Error-Code");
  if (code) throw new Error(`${subject}: ${code} ${msg.headers.get("Nats-Service-Error")}`);
  return msg.json();
}

const { id, verdict } = await call("wf.api.submit", readFileSync(process.argv[2]));
console.log(JSON.stringify({ id, verdict }));
// An ordered consumer on the people's view WF_EVENTS, made before the exec. It reads the
// workflow's events from its first (submitted) whenever it is made: none is missed.
const js = jetstream(nc);
const events = await js.consumers.get("WF_EVENTS", { filter_subjects: `wf.evt.${id}.>` });
console.log(JSON.stringify({ consumer: (await events.info(true)).name }));
await call("wf.api.exec", JSON.stringify({ id }));
for await (const m of await events.consume()) {
  console.log(JSON.stringify({ subject: m.subject, seq: m.seq }));
  if (/\.workflow\.(completed|failed)$/.test(m.subject)) break;
}
await nc.close();
