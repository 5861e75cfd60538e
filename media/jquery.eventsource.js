/*
 * jquery.eventsource.js: the $.eventsource API the 2013 cyclone-sse pages used, written
 * anew for today's daemon (it serves this file at /static/jquery.eventsource.js).
 * jQuery 1.7 and later.
 *
 *   $.eventsource({
 *     label: "feed",                   // what to close it by (default: url?data)
 *     url: "http://127.0.0.1:8888/",
 *     data: {channels: ["a", "b"]},    // or a query string
 *     dataType: "json",                // or "text": what message() is handed
 *     events: ["score"],               // named events message() gets too
 *     withCredentials: false,          // send cookies to a daemon on another origin
 *     open: function () {},
 *     error: function (e) {},
 *     message: function (data, event) {}  // event: type, data, lastEventId, channel
 *   });
 *   $.eventsource("close", "feed");    // or $.eventsource.close("feed"); "*": all
 *   $.eventsource("streams");          // the open ones, by label
 *
 * With window.EventSource it opens one, which reconnects and resumes by itself.
 * Without, it long-polls with XHR: the daemon answers each poll with event-stream
 * text (the same bytes a stream carries), parsed here as a browser would, and the
 * next poll names the last event id (?lastEventId=, so a poll to another origin needs
 * no preflight): nothing published between two polls is lost or repeated.
 *
 * message() gets unnamed events and those listed in `events`.  When the daemon sends
 * "channel" events (?channelEvents=1, as jquery.sse.js asks), event.channel is the
 * channel of each event; the daemon's own "stream-open", "history-gap" and
 * "token-expired" events are not handed to message() unless listed.
 */
(function ($, global) {
  "use strict";

  var streams = {};
  var DAEMON_EVENTS = {"channel": 1, "stream-open": 1, "history-gap": 1, "token-expired": 1};

  function parse(text, dataType) {
    if (dataType !== "json") { return text; }
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function Source(options) {
    this.options = options;
    this.lastEventId = "";
    this.channel = undefined;
    this.closed = false;
    this.retry = options.retry || 3000;
    this.wanted = {message: true};
    var self = this;
    $.each(options.events || [], function (i, name) { self.wanted[name] = true; });
  }

  // Every event goes through here, whichever the transport.
  Source.prototype.dispatch = function (type, data, lastEventId) {
    if (lastEventId) { this.lastEventId = lastEventId; }
    if (type === "channel") { this.channel = data; return; }
    var channel = this.channel;
    this.channel = undefined;  // a "channel" event names only the event after it
    if (!this.wanted[type]) { return; }
    var event = {type: type, data: data, lastEventId: this.lastEventId,
                 channel: channel, label: this.options.label};
    this.options.message.call(event, parse(data, this.options.dataType), event);
  };

  Source.prototype.url = function (extra) {
    var query = this.options.data || "";
    if (extra) { query += (query ? "&" : "") + extra; }
    return this.options.url + (query ? (this.options.url.indexOf("?") < 0 ? "?" : "&") +
                                       query : "");
  };

  Source.prototype.openNative = function () {
    var self = this;
    var source = new global.EventSource(this.url(), {
      withCredentials: !!this.options.withCredentials});
    this.native = source;
    source.addEventListener("open", function (e) { self.options.open.call(e, e); });
    source.addEventListener("error", function (e) { self.options.error.call(e, e); });
    var names = ["message", "channel"];
    $.each(this.wanted, function (name) {
      if ($.inArray(name, names) < 0) { names.push(name); }
    });
    $.each(names, function (i, name) {
      source.addEventListener(name, function (e) {
        self.dispatch(name, e.data, e.lastEventId);
      });
    });
  };

  // The event-stream parsing rules of the HTML standard, for one poll's answer.
  Source.prototype.read = function (text) {
    var lines = text.split(/\r\n|\r|\n/);
    var type = "", data = [], id = null, hasData = false;
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (line === "") {
        if (id !== null) { this.lastEventId = id; }
        if (hasData) { this.dispatch(type || "message", data.join("\n"), this.lastEventId); }
        type = ""; data = []; id = null; hasData = false;
        continue;
      }
      if (line.charAt(0) === ":") { continue; }
      var colon = line.indexOf(":");
      var field = colon < 0 ? line : line.slice(0, colon);
      var value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.charAt(0) === " ") { value = value.slice(1); }
      if (field === "data") { data.push(value); hasData = true; }
      else if (field === "event") { type = value; }
      else if (field === "id" && value.indexOf("\u0000") < 0) { id = value; }
      else if (field === "retry" && /^\d+$/.test(value)) { this.retry = parseInt(value, 10); }
    }
  };

  Source.prototype.poll = function () {
    var self = this;
    if (this.closed) { return; }
    var extra = this.lastEventId ? "lastEventId=" + encodeURIComponent(this.lastEventId) : "";
    this.request = $.ajax({
      type: "GET",
      url: this.url(extra),
      dataType: "text",
      cache: false,  // its _= argument also tells the daemon this is a poll
      timeout: 60000,
      xhrFields: this.options.withCredentials ? {withCredentials: true} : {}
    }).done(function (text) {
      if (self.closed) { return; }
      if (!self.opened) {
        self.opened = true;
        self.options.open.call(self, {type: "open"});
      }
      self.read(text);
      self.timer = global.setTimeout(function () { self.poll(); }, 0);
    }).fail(function (xhr, status) {
      if (self.closed || status === "abort") { return; }
      self.opened = false;
      self.options.error.call(self, {type: "error", status: xhr.status});
      self.timer = global.setTimeout(function () { self.poll(); }, self.retry);
    });
  };

  Source.prototype.close = function () {
    this.closed = true;
    if (this.native) { this.native.close(); }
    if (this.request) { this.request.abort(); }
    if (this.timer) { global.clearTimeout(this.timer); }
  };

  function close(label) {
    $.each(streams, function (name, source) {
      if (!label || label === "*" || label === name) {
        source.close();
        delete streams[name];
      }
    });
    return streams;
  }

  $.eventsource = function (options) {
    if (typeof options === "string") {  // $.eventsource("close" | "streams", label)
      var label = arguments[1] || "*";
      if (options === "close") { return close(label); }
      if (options === "streams") { return label === "*" ? streams : streams[label] || {}; }
      throw new Error("$.eventsource: unknown command " + options);
    }
    if (!options || typeof options.url !== "string") {
      throw new SyntaxError("$.eventsource: a url is required");
    }
    var settings = $.extend({open: $.noop, message: $.noop, error: $.noop,
                             dataType: "json"}, options);
    if ($.isPlainObject(settings.data)) { settings.data = $.param(settings.data, true); }
    settings.label = settings.label || settings.url + "?" + (settings.data || "");
    close(settings.label);  // one stream per label
    var source = new Source(settings);
    source.transport = typeof global.EventSource === "function" && !settings.poll ?
      "eventsource" : "poll";
    streams[settings.label] = source;
    if (source.transport === "eventsource") { source.openNative(); } else { source.poll(); }
    return streams;
  };
  $.each(["close", "streams"], function (i, name) {
    $.eventsource[name] = function (label) { return $.eventsource(name, label || "*"); };
  });
})(jQuery, window);
