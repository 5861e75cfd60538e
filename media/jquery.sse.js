/*
 * jquery.sse.js: the 2013 cyclone-sse jQuery plugins, written anew for today's daemon
 * (served at /static/jquery.sse.js, and as /static/jquery.sse.simple.js for pages that
 * loaded the one-element plugin by that name).  Needs jquery.eventsource.js first.
 *
 * Many elements, ONE connection:
 *
 *   <div class="sse" data-sse-channels="weather" data-sse-events="weather"></div>
 *   $.sse({url: "http://127.0.0.1:8888/", selector: ".sse", eventPrefix: "sse.",
 *          type: "json", channelAttr: "data-sse-channels", eventAttr: "data-sse-events",
 *          label: "default", debug: false});
 *   $("#weather").on("sse.weather", function (e, data) { ... });
 *
 * The channels of every element found are subscribed on one stream, which names each
 * event's channel (?channelEvents=1).  An event (channel C, name N, payload P) then
 * triggers, with P:
 *   - on an element without data-sse-events whose channels include C (or a * pattern
 *     matching it): eventPrefix + N  (N is "message" unless the publisher named it);
 *   - on an element with data-sse-events (and whose channels, if it lists any, include
 *     C): eventPrefix + N if the element lists N, else eventPrefix + C if it lists C.
 * Payloads in the 2013 convention, a JSON [eventType, data] array whose eventType an
 * element lists, trigger eventPrefix + eventType with data on those elements, as in
 * 2013 (whatever the channel).  Every element also gets eventPrefix + "open" and
 * eventPrefix + "error".  type: "json" parses payloads (null when not JSON), "text"
 * hands them over as they are.
 *
 * One element, its own connection (the 2013 jquery.sse.simple.js):
 *
 *   <div id="feed" data-sse-address="http://127.0.0.1:8888/" data-sse-channels="base">
 *   $("#feed").sse({debug: true});  // triggers sse.open, sse.message, sse.error
 */
(function ($, global) {
  "use strict";

  function list(text) {
    var items = [];
    $.each((text || "").split(","), function (i, item) {
      item = item.replace(/^\s+|\s+$/g, "");
      if (item && $.inArray(item, items) < 0) { items.push(item); }
    });
    return items;
  }

  // Does a channel list (names and * patterns) take in this channel?
  function covers(channels, channel) {
    for (var i = 0; i < channels.length; i++) {
      var pattern = channels[i];
      if (pattern === channel) { return true; }
      if (pattern.indexOf("*") >= 0) {
        var parts = pattern.split("*");
        for (var j = 0; j < parts.length; j++) {
          parts[j] = parts[j].replace(/[.+\-\/=:@#]/g, "\\$&");
        }
        if (new RegExp("^" + parts.join(".*") + "$").test(channel)) { return true; }
      }
    }
    return false;
  }

  function log(options, what) {
    if (options.debug && global.console) { global.console.log("sse:", what); }
  }

  $.sse = function (options) {
    options = $.extend({
      url: "/sse/",
      selector: ".sse",
      channelAttr: "data-sse-channels",
      eventAttr: "data-sse-events",
      eventPrefix: "sse.",
      type: "json",
      label: "default",
      debug: false
    }, options);
    if (!$.eventsource) {
      log(options, "jquery.eventsource.js must be loaded before jquery.sse.js");
      return null;
    }
    var handlers = [];
    var channels = [];
    var names = [];
    $(options.selector).each(function () {
      var element = $(this);
      var handler = {element: element, channels: list(element.attr(options.channelAttr)),
                     events: list(element.attr(options.eventAttr))};
      handlers.push(handler);
      $.each(handler.channels, function (i, c) {
        if ($.inArray(c, channels) < 0) { channels.push(c); }
      });
      $.each(handler.events, function (i, e) {
        if ($.inArray(e, names) < 0) { names.push(e); }
      });
    });
    if (!channels.length) {
      log(options, "no element names a channel: nothing to listen to");
      return null;
    }

    function everyone(name, data) {
      $.each(handlers, function (i, handler) { handler.element.trigger(name, data); });
    }

    function message(payload, event) {
      log(options, [event.channel, event.type, payload]);
      var served = [];
      // 2013: [eventType, data] payloads, routed by eventType alone
      if (Array.isArray(payload) && payload.length === 2 && typeof payload[0] === "string") {
        $.each(handlers, function (i, handler) {
          if ($.inArray(payload[0], handler.events) >= 0) {
            handler.element.trigger(options.eventPrefix + payload[0], payload[1]);
            served.push(handler);
          }
        });
      }
      if (event.channel === undefined) { return; }  // no channel named: nothing else
      $.each(handlers, function (i, handler) {
        if ($.inArray(handler, served) >= 0) { return; }
        var inChannel = covers(handler.channels, event.channel);
        if (!handler.events.length) {
          if (inChannel) {
            handler.element.trigger(options.eventPrefix + event.type, [payload]);
          }
          return;
        }
        if (handler.channels.length && !inChannel) { return; }
        // the event's own name if listed, else its channel's if listed
        var name = $.inArray(event.type, handler.events) >= 0 ? event.type :
          $.inArray(event.channel, handler.events) >= 0 ? event.channel : null;
        if (name !== null) {
          handler.element.trigger(options.eventPrefix + name, [payload]);
        }
      });
    }

    log(options, options.url + "?" + $.param({channels: channels}, true));
    return $.eventsource({
      label: options.label,
      url: options.url,
      data: {channels: channels, channelEvents: 1},
      dataType: options.type,
      events: names,
      withCredentials: options.withCredentials,
      poll: options.poll,
      open: function () { everyone(options.eventPrefix + "open"); },
      error: function (error) { everyone(options.eventPrefix + "error", [error]); },
      message: message
    });
  };

  $.fn.sse = function (options) {
    options = $.extend({address: null, channels: [], type: "json", label: "sse-channel",
                        eventPrefix: "sse.", debug: false}, options);
    return this.each(function () {
      var element = $(this);
      var address = element.attr("data-sse-address") || options.address;
      if (!address || !$.eventsource) {
        log(options, "no data-sse-address (or no jquery.eventsource.js)");
        return;
      }
      var channels = list(element.attr("data-sse-channels"));
      $.eventsource({
        label: options.label,
        url: address,
        data: {channels: channels.length ? channels : options.channels},
        dataType: options.type,
        withCredentials: options.withCredentials,
        poll: options.poll,
        open: function () { element.trigger(options.eventPrefix + "open"); },
        error: function (error) { element.trigger(options.eventPrefix + "error", [error]); },
        message: function (payload) {
          log(options, payload);
          if (payload !== null && payload !== undefined) {
            element.trigger(options.eventPrefix + "message", payload);
          }
        }
      });
    });
  };
})(jQuery, window);
