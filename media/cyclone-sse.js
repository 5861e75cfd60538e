/*
 * cyclone-sse browser client.
 *
 *   const stream = CycloneSSE.connect("http://127.0.0.1:8888/", {
 *     channels: ["base", "news.*"],
 *     onmessage: (e) => console.log(e.channel, e.data, e.lastEventId),
 *   });
 *   stream.on("score", (e) => ...);          // named events
 *   stream.on("history-gap", (e) => ...);    // replay could not be complete
 *   stream.close();
 *
 * Private channels: {token: "..."} sends a subscriber token (?token=); make it a
 * function returning a token (or a Promise of one) and the client asks it again when
 * the daemon ends the stream at the token's expiry ("token-expired") or refuses a
 * reconnect, then resumes from the last event id: nothing is lost or repeated.
 * {withCredentials: true} sends cookies (a token cookie) to a daemon on another origin.
 *
 * Uses the browser's EventSource when there is one (it reconnects and resumes by
 * itself), and otherwise long-polls the daemon (?transport=poll), sending the last
 * event id with every poll so nothing published between two polls is missed.
 * Force long-polling with {transport: "poll"}.  {transport: "websocket"} speaks the
 * daemon's WebSocket protocol (same callbacks, same resume), and falls back to
 * EventSource, then long-polling, when no WebSocket connection can be made.
 * {transport: "sockjs"} speaks the same protocol inside a SockJS session when the page
 * has loaded sockjs-client: connect to the daemon's --sockjs-prefix URL.  Over
 * WebSocket a page may also publish to channels whose policy allows it, and ask who is
 * on a presence channel:
 *
 *   stream.publish("chat.lobby", {text: "hi"}).then((answer) => answer.eventId);
 *   stream.presence("chat.lobby").then((clients) => ...);  // [{client, user}, ...]
 *   stream.on("join", (e) => e.user);  stream.on("leave", (e) => e.user);
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
    var self = this;
    this.url = url;
    this.channels = options.channels || [];
    this.handlers = {};
    this.lastEventId = options.lastEventId || "";
    this.closed = false;
    this.transport = null;
    this.tokenSource = options.token;
    this.withCredentials = !!options.withCredentials;
    this.retry = options.retry || 3000;
    this._asked = {};  // WebSocket request id -> its promise's {resolve, reject}
    this._nextId = 2;  // (1 is the subscription)
    if (options.onmessage) { this.on("message", options.onmessage); }
    if (options.onopen) { this.on("open", options.onopen); }
    if (options.onerror) { this.on("error", options.onerror); }
    var wanted = options.transport || "auto";
    this._freshToken(function () {
      if (wanted === "websocket" && typeof global.WebSocket === "function") {
        self._websocket(false);
      } else if (wanted === "sockjs" && typeof global.SockJS === "function") {
        self._websocket(true);  // (url: the daemon's --sockjs-prefix endpoint)
      } else {
        self._fallback(wanted);
      }
    });
  }

  Stream.prototype._fallback = function (wanted) {
    if (wanted !== "poll" && typeof global.EventSource === "function") {
      this._eventSource();
    } else {
      this._poll(this.retry);
    }
  };

  Stream.prototype._subscribeMessage = function () {
    return JSON.stringify({type: "subscribe", id: 1, channels: this.channels,
                           lastEventId: this.lastEventId || undefined,
                           token: this.token || undefined});
  };

  // The WebSocket protocol, over a WebSocket or (sockjs) inside a SockJS session,
  // whichever transport sockjs-client finds.
  Stream.prototype._websocket = function (sockjs) {
    var self = this;
    this.transport = sockjs ? "sockjs" : "websocket";
    var socket = sockjs ? new global.SockJS(this.url)
                        : new global.WebSocket(this.url.replace(/^http/, "ws"));
    this.socket = socket;
    socket.onopen = function () { socket.send(self._subscribeMessage()); };
    socket.onmessage = function (m) {
      var message = JSON.parse(m.data);
      var asked = message.id !== undefined && message.id !== 1 ? self._asked[message.id]
                                                                 : undefined;
      if (asked) { delete self._asked[message.id]; }
      if (message.type === "subscribed") {
        self._wsWorked = true;
        self.lastEventId = message.lastEventId || self.lastEventId;
        self.client = message.client;
        self._emit("open", {type: "open"});
      } else if (message.type === "event") {
        self.lastEventId = message.id;
        self._emit(message.event, {type: message.event, data: message.data,
                                   lastEventId: message.id, channel: message.channel});
      } else if (message.type === "gap") {
        self._emit("history-gap", {type: "history-gap", lastEventId: self.lastEventId,
          data: JSON.stringify({reason: message.reason, lastEventId: message.lastEventId})});
      } else if (message.type === "join" || message.type === "leave") {
        self._emit(message.type, message);
      } else if (message.type === "token-expired") {
        // that subscription ended; the connection stays: subscribe again, freshly
        self._emit("token-expired", {type: "token-expired", lastEventId: self.lastEventId});
        self._freshToken(function () {
          if (self.socket === socket) { socket.send(self._subscribeMessage()); }
        });
      } else if (message.type === "published" || message.type === "presence") {
        if (asked) { asked.resolve(message.type === "presence" ? message.clients : message); }
      } else if (message.type === "error") {
        if (asked) {
          asked.reject({code: message.code, reason: message.reason});
          return;
        }
        self._emit("error", {type: "error", status: message.code, reason: message.reason});
        if (message.code === 401 && typeof self.tokenSource === "function") {
          socket.close();  // reconnects below with a fresh token
        }
      }
    };
    socket.onclose = function (e) {
      self._failAsked({code: e.code, reason: "the connection closed"});
      if (self.closed) { return; }
      self.socket = null;
      if (!self._wsWorked && !sockjs) {  // no WebSocket here (a proxy, an old server)
        self._fallback("auto");
        return;
      }
      self._emit("error", {type: "error", code: e.code});
      self._timer = global.setTimeout(function () {
        self._freshToken(function () { self._websocket(sockjs); });
      }, self.retry);
    };
  };

  // A request over the WebSocket (publish, presence): a Promise of its answer.
  Stream.prototype._ask = function (message) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (!self.socket || self.socket.readyState !== 1) {
        reject({code: 0, reason: "not connected over WebSocket (transport: websocket)"});
        return;
      }
      message.id = self._nextId++;
      self._asked[message.id] = {resolve: resolve, reject: reject};
      self.socket.send(JSON.stringify(message));
    });
  };

  Stream.prototype._failAsked = function (why) {
    var asked = this._asked;
    this._asked = {};
    Object.keys(asked).forEach(function (id) { asked[id].reject(why); });
  };

  Stream.prototype.publish = function (channel, data, event) {
    return this._ask({type: "publish", channel: channel, data: data,
                      event: event || undefined});
  };

  Stream.prototype.presence = function (channel) {
    return this._ask({type: "presence", channel: channel});
  };

  // Ask the page for a token (a string, or a function returning one or a Promise).
  Stream.prototype._freshToken = function (then) {
    var self = this;
    var source = this.tokenSource;
    if (typeof source !== "function") {  // a fixed token (or none): no waiting
      this.token = source || "";
      then();
      return;
    }
    Promise.resolve(source()).then(function (token) {
      self.token = token || "";
      if (!self.closed) { then(); }
    }, function () {
      self._emit("error", {type: "error", reason: "token"});
      if (!self.closed) { self._timer = global.setTimeout(function () {
        self._freshToken(then); }, self.retry); }
    });
  };

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
      self._emit(name, {type: name, data: e.data, lastEventId: self.lastEventId,
                        channel: self._channel});
    });
  };

  Stream.prototype._eventSource = function () {
    var self = this;
    this.transport = "eventsource";
    // channelEvents: the daemon names each event's channel in a "channel" event
    // just before it (read here; every event handed to the page carries .channel)
    var source = new global.EventSource(
      buildUrl(this.url, this.channels, {lastEventId: this.lastEventId, token: this.token,
                                         channelEvents: 1}),
      {withCredentials: this.withCredentials});
    this.source = source;
    source.onopen = function () { self._emit("open", {type: "open"}); };
    source.onerror = function () {
      self._emit("error", {type: "error"});
      // A refused reconnect (401 once the token expired) closes an EventSource for
      // good: with a token function, get a new token and open a new one.
      if (source.readyState === 2 && typeof self.tokenSource === "function") {
        self._reopen(self.retry);
      }
    };
    // The daemon ends the stream at the token's expiry; the event's id is the
    // position to resume from.
    // (handlers the page registered with on("token-expired") are called as usual)
    source.addEventListener("token-expired", function (e) {
      self.lastEventId = e.lastEventId || self.lastEventId;
      self._reopen(0);
    });
    source.addEventListener("channel", function (e) { self._channel = e.data; });
    source.addEventListener("stream-open", function (e) {
      self.lastEventId = e.lastEventId || self.lastEventId;
    });
    this.source.onmessage = function (e) {
      self.lastEventId = e.lastEventId || self.lastEventId;
      self._emit("message", {type: "message", data: e.data, lastEventId: self.lastEventId,
                             channel: self._channel});
    };
    Object.keys(this.handlers).forEach(function (name) {
      if (name !== "open" && name !== "error" && name !== "message") { self._listen(name); }
    });
  };

  Stream.prototype._reopen = function (delay) {
    var self = this;
    if (this.source) { this.source.close(); this.source = null; }
    if (this.closed) { return; }
    this._timer = global.setTimeout(function () {
      self._freshToken(function () { self._eventSource(); });
    }, delay);
  };

  Stream.prototype._poll = function (retry) {
    var self = this;
    this.transport = "poll";
    var opened = false;
    var refused = 0;
    function again(delay) {
      if (!self.closed) { self._timer = global.setTimeout(poll, delay); }
    }
    function poll() {
      var request = new global.XMLHttpRequest();
      self._request = request;
      request.open("GET", buildUrl(self.url, self.channels, {
        transport: "poll", lastEventId: self.lastEventId, token: self.token}));
      request.withCredentials = self.withCredentials;
      request.onload = function () {
        if (request.status === 401 && typeof self.tokenSource === "function") {
          self._emit("error", {type: "error", status: 401});
          refused += 1;  // the first refusal is the token expiring: ask again at once
          self._freshToken(function () { again(refused > 1 ? retry : 0); });
          return;
        }
        refused = 0;
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
    if (this.socket) { this.socket.close(); }
    if (this._request) { this._request.abort(); }
    if (this._timer) { global.clearTimeout(this._timer); }
  };

  global.CycloneSSE = {
    connect: function (url, options) { return new Stream(url, options || {}); },
    Stream: Stream
  };
})(typeof window !== "undefined" ? window : this);
