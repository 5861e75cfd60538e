// Subscribes to a cyclone-sse WebSocket with Node's ws package and prints every message
// the daemon sends, one JSON object a line: node ws-follow.mjs URL CHANNEL [LAST_ID]
import WebSocket from "ws";

const [url, channel, lastEventId] = process.argv.slice(2);
const socket = new WebSocket(url);
socket.on("open", () => socket.send(JSON.stringify(
  { type: "subscribe", id: 1, channels: [channel], lastEventId })));
socket.on("message", (data) => process.stdout.write(data.toString() + "\n"));
socket.on("close", (code) => process.stdout.write(JSON.stringify({ type: "closed", code }) + "\n"));
