// The WebSocket server the latency benchmark measures the daemon's WebSocket against:
// Node with npm's `ws` (from tests/js/node_modules), written as its README broadcasts,
// one send() per client.  It speaks as much of the daemon's JSON protocol as the load
// client uses: a {"type": "subscribe", "channels": [...]} message, answered with
// {"type": "subscribed"}, then {"type": "event", "channel", "data"} messages.  An event
// is published with POST /publish?channel=NAME (the body is the data) and answered 200
// once it was handed to every subscriber.  Prints "listening PORT" once it listens.
"use strict";
const http = require("http");
const { WebSocketServer } = require(process.env.WS_MODULE || "ws");

const channels = new Map(); // channel name -> Set of sockets

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://bench");
  if (req.method !== "POST" || url.pathname !== "/publish") {
    res.writeHead(404).end();
    return;
  }
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    const channel = url.searchParams.get("channel");
    const message = JSON.stringify({ type: "event", channel,
                                     data: Buffer.concat(parts).toString() });
    const subscribers = channels.get(channel) || new Set();
    for (const socket of subscribers) socket.send(message);
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ subscribers: subscribers.size }));
  });
});

const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on("connection", (socket) => {
  const joined = [];
  socket.on("message", (text) => {
    const message = JSON.parse(text);
    if (message.type !== "subscribe") return;
    for (const name of message.channels) {
      if (!channels.has(name)) channels.set(name, new Set());
      channels.get(name).add(socket);
      joined.push(name);
    }
    socket.send(JSON.stringify({ type: "subscribed", id: message.id,
                                 channels: message.channels }));
  });
  socket.on("close", () => {
    for (const name of joined) channels.get(name).delete(socket);
  });
});

server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () => {
  console.log(`listening ${server.address().port}`);
});
