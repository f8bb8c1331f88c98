#!/usr/bin/env node
// A stock ioredis client on Kraken's Redis port (docs/RESP.md).
//
//     npm install ioredis
//     node ioredis_subscriber.js [HOST] [RESP_PORT]
//
// Publishes, then subscribes retroactively (KRAKEN.REGISTER with a horizon,
// then ioredis's own subscribe(), so ioredis knows the channel and
// re-subscribes it on reconnection) and receives the replayed message and
// a live one. A subscriber never receives its own messages: publishing
// uses a second connection, as with Redis.
const Redis = require("ioredis");

const host = process.argv[2] || "127.0.0.1";
const port = Number(process.argv[3] || 6380);

async function main() {
  const pub = new Redis({ host, port });
  const sub = new Redis({ host, port });
  const seen = [];
  const done = new Promise((resolve) => {
    sub.on("message", (channel, message) => {
      console.log(`message on ${channel}: ${message}`);
      seen.push(message);
      if (message === "live") resolve();
    });
  });

  // Published before anyone subscribed: reached nobody.
  const horizon = Math.floor(Date.now() / 1000);
  console.log("reached:", await pub.publish("news", "earlier"));

  // Everything published on the next SUBSCRIBE's channels since `horizon`
  // is replayed first. (ioredis ignores the `kraken.retro` result push.)
  console.log(await sub.call("KRAKEN.REGISTER", String(horizon)));
  await sub.subscribe("news");
  console.log("reached:", await pub.publish("news", "live"));
  await done;
  if (seen[0] !== "earlier") throw new Error(`replay missing: ${seen}`);

  // Errors are rejected promises; the connection stays usable.
  try {
    await pub.call("GET", "k");
  } catch (e) {
    console.log("error:", e.message);
  }
  await sub.unsubscribe("news");
  sub.disconnect();
  pub.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
