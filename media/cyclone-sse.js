/*
 * cyclone-sse browser client.
 *
 *   const stream = CycloneSSE.connect("http://127.0.0.1:8888/", {
 *     channels: ["base", "news.*"],
 *     onmessage: (e) => console.log(e.data, e.lastEventId),
 *   });
 *   stream.on("score", (e) => ...);          // named events
 *   stream.on("history-gap", (e) => ...);    // replay could not be complete
 *   stream.close();
 *
 * Uses the browser's EventSource when there is one (it reconnects and resumes by
 * itself), and otherwise long-polls the daemon (?transport=poll), sending the last
 * event id with every poll so nothing published between two polls is missed.
 * Force long-polling with {transport: "poll"}.
 */
(function (global) {
  "use strict";

  function buildUrl(base, channels, extra) {
    var query = channels.map(function (c) {
      return "channels=" + encodeURIComponent(c);
    });
    Object.keys(extra).forEach(function (key) {
      if (extra[key] !== undefined && extra[key] !== null && extra[key] !== "") {
        query.push(key + "=" + encodeURIComponent(extra[key]));
      }
    });
    return base + (base.indexOf("?") < 0 ? "?" : "&") + query.join("&");
  }

  function Stream(url, options) {
    this.url = url;
    this.channels = options.channels || [];
    this.handlers = {};
    this.lastEventId = options.lastEventId || "";
    this.closed = false;
    this.transport = null;
    if (options.onmessage) { this.on("message", options.onmessage); }
    if (options.onopen) { this.on("open", options.onopen); }
    if (options.onerror) { this.on("error", options.onerror); }
    var wanted = options.transport || "auto";
    if (wanted !== "poll" && typeof global.EventSource === "function") {
      this._eventSource();
    } else {
      this._poll(options.retry || 3000);
    }
  }

  Stream.prototype.on = function (name, handler) {
    (this.handlers[name] = this.handlers[name] || []).push(handler);
    if (this.source && name !== "open" && name !== "error" && name !== "message") {
      this._listen(name);
    }
    return this;
  };

  Stream.prototype._emit = function (name, event) {
    (this.handlers[name] || []).forEach(function (handler) { handler(event); });
  };

  Stream.prototype._listen = function (name) {
    var self = this;
    this.source.addEventListener(name, function (e) {
      self.lastEventId = e.lastEventId || self.lastEventId;
      self._emit(name, {type: name, data: e.data, lastEventId: self.lastEventId});
    });
  };

  Stream.prototype._eventSource = function () {
    var self = this;
    this.transport = "eventsource";
    this.source = new global.EventSource(buildUrl(this.url, this.channels,
                                                  {lastEventId: this.lastEventId}));
    this.source.onopen = function () { self._emit("open", {type: "open"}); };
    this.source.onerror = function () { self._emit("error", {type: "error"}); };
    this.source.onmessage = function (e) {
      self.lastEventId = e.lastEventId || self.lastEventId;
      self._emit("message", {type: "message", data: e.data, lastEventId: self.lastEventId});
    };
    Object.keys(this.handlers).forEach(function (name) {
      if (name !== "open" && name !== "error" && name !== "message") { self._listen(name); }
    });
  };

  Stream.prototype._poll = function (retry) {
    var self = this;
    this.transport = "poll";
    var opened = false;
    function again(delay) {
      if (!self.closed) { self._timer = global.setTimeout(poll, delay); }
    }
    function poll() {
      var request = new global.XMLHttpRequest();
      self._request = request;
      request.open("GET", buildUrl(self.url, self.channels,
                                   {transport: "poll", lastEventId: self.lastEventId}));
      request.onload = function () {
        if (request.status !== 200) {
          self._emit("error", {type: "error", status: request.status});
          again(retry);
          return;
        }
        var answer = JSON.parse(request.responseText);
        if (!opened) { opened = true; self._emit("open", {type: "open"}); }
        retry = answer.retry || retry;
        if (answer.gap) {
          self._emit("history-gap", {type: "history-gap", lastEventId: self.lastEventId,
            data: JSON.stringify({reason: answer.gap, lastEventId: self.lastEventId})});
        }
        answer.events.forEach(function (e) {
          self.lastEventId = e.id;
          self._emit(e.event, {type: e.event, data: e.data, lastEventId: e.id,
                               channel: e.channel});
        });
        self.lastEventId = answer.lastEventId || self.lastEventId;
        again(0);
      };
      request.onerror = function () {
        self._emit("error", {type: "error"});
        again(retry);
      };
      request.send();
    }
    poll();
  };

  Stream.prototype.close = function () {
    this.closed = true;
    if (this.source) { this.source.close(); }
    if (this._request) { this._request.abort(); }
    if (this._timer) { global.clearTimeout(this._timer); }
  };

  global.CycloneSSE = {
    connect: function (url, options) { return new Stream(url, options || {}); },
    Stream: Stream
  };
})(typeof window !== "undefined" ? window : this);
