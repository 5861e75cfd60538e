// Follows one cyclone-sse stream with npm's eventsource client and prints what it
// dispatches, one JSON object a line: node follow.mjs URL
import { EventSource } from "eventsource";

const out = (fields) => process.stdout.write(JSON.stringify(fields) + "\n");
const source = new EventSource(process.argv[2]);
source.onopen = () => out({ type: "open" });
source.onerror = () => out({ type: "error" });
source.onmessage = (e) => out({ type: "message", data: e.data, id: e.lastEventId });
for (const name of ["stream-open", "history-gap"]) {
  source.addEventListener(name, (e) => out({ type: name, data: e.data, id: e.lastEventId }));
}
