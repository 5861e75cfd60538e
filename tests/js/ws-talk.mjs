// Talks to a WebSocket with Node's `ws` (npm): `node ws-talk.mjs URL`.  Each line of
// stdin is sent as a text message; each message received is printed as a JSON line
// {"type": "message", "data": ..., "binary": bool}, then {"type": "close", "code": N}.
import { createInterface } from "node:readline";
import WebSocket from "ws";

const socket = new WebSocket(process.argv[2]);
const print = (fields) => process.stdout.write(JSON.stringify(fields) + "\n");
socket.on("open", () => {
  print({ type: "open" });
  createInterface({ input: process.stdin }).on("line", (line) => socket.send(line));
});
socket.on("message", (data, binary) =>
  print({ type: "message", data: binary ? data.toString("base64") : data.toString(), binary }));
socket.on("unexpected-response", (request, response) => {
  print({ type: "refused", status: response.statusCode });
  process.exit(0);
});
socket.on("close", (code) => {
  print({ type: "close", code });
  process.exit(0);
});
socket.on("error", (error) => print({ type: "error", message: String(error) }));
