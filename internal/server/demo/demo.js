// herald demo page. No framework, no build step. Every value that comes from
// the network is put into the page with textContent, never as HTML.
(function () {
  "use strict";

  var MAX_ITEMS = 500;      // events shown in the list
  var MAX_RECEIVED = 10000; // events kept in window.herald.received

  var $ = function (id) { return document.getElementById(id); };
  var es = null;
  var listened = [];

  // window.herald is the page's state, for people and browser tests.
  var herald = window.herald = {
    received: [], // {id, type, data, topic?}: every event, oldest first
    state: "closed", // connecting | open | closed
    reconnects: 0,
    url: "",
    connect: connect,
    disconnect: disconnect,
    publish: publish
  };

  function splitList(s) {
    return s.split(",").map(function (x) { return x.trim(); }).filter(function (x) { return x !== ""; });
  }

  function setState(state) {
    herald.state = state;
    var el = $("state");
    el.textContent = state;
    el.setAttribute("data-state", state);
    $("reconnects").textContent = String(herald.reconnects);
    $("connect").disabled = state !== "closed";
    $("disconnect").disabled = state === "closed";
  }

  function addItem(li) {
    var list = $("events");
    var atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.appendChild(li);
    while (list.children.length > MAX_ITEMS) {
      list.removeChild(list.firstChild);
    }
    if (atBottom) {
      list.scrollTop = list.scrollHeight;
    }
  }

  function note(text) {
    var li = document.createElement("li");
    li.className = "note";
    li.textContent = new Date().toLocaleTimeString() + " " + text;
    addItem(li);
  }

  function onEvent(ev) {
    var rec = { id: ev.lastEventId, type: ev.type, data: ev.data };
    var li = document.createElement("li");
    li.setAttribute("data-id", ev.lastEventId);
    li.setAttribute("data-type", ev.type);
    if (ev.type === "herald.reset") {
      li.className = "reset";
      try {
        var info = JSON.parse(ev.data);
        rec.topic = info.topic;
        rec.reason = info.reason;
      } catch (e) { /* shown raw below */ }
    }
    var id = document.createElement("span");
    id.className = "id";
    id.textContent = ev.lastEventId;
    var type = document.createElement("span");
    type.className = "type";
    type.textContent = ev.type;
    var data = document.createElement("span");
    data.className = "data";
    data.textContent = ev.data;
    li.appendChild(id);
    li.appendChild(type);
    li.appendChild(data);
    addItem(li);

    herald.received.push(rec);
    if (herald.received.length > MAX_RECEIVED) {
      herald.received.splice(0, herald.received.length - MAX_RECEIVED);
    }
    $("count").textContent = String(herald.received.length);
    $("last-id").textContent = ev.lastEventId;
  }

  // connect opens an EventSource on topics (an array or a comma-separated
  // string), listening to message, herald.reset and the extra types.
  function connect(topics, types) {
    disconnect();
    if (typeof topics === "string") { topics = splitList(topics); }
    if (typeof types === "string") { types = splitList(types); }
    topics = topics || splitList($("topics").value);
    types = types || splitList($("types").value);
    if (topics.length === 0) {
      note("enter at least one topic");
      return;
    }
    var q = new URLSearchParams();
    topics.forEach(function (t) { q.append("topic", t); });
    herald.url = "/events?" + q.toString();
    $("url").textContent = "GET " + herald.url;
    herald.reconnects = 0;
    setState("connecting");

    var source = new EventSource(herald.url);
    es = source;
    var wasOpen = false;
    source.onopen = function () {
      if (es !== source) { return; }
      if (wasOpen) { note("reconnected"); }
      wasOpen = true;
      setState("open");
    };
    source.onerror = function () {
      if (es !== source) { return; }
      if (source.readyState === EventSource.CONNECTING) {
        herald.reconnects++;
        setState("connecting");
        note("connection lost, the browser reconnects with Last-Event-ID " + JSON.stringify($("last-id").textContent));
      } else {
        setState("closed");
        note("connection closed for good (the server answered with an error or a wrong content type)");
        es = null;
      }
    };
    listened = ["message", "herald.reset"];
    types.forEach(function (t) {
      if (listened.indexOf(t) < 0) { listened.push(t); }
    });
    listened.forEach(function (t) { source.addEventListener(t, onEvent); });
  }

  function disconnect() {
    if (es) {
      es.close();
      es = null;
      note("disconnected");
    }
    setState("closed");
  }

  // publish posts one event; it resolves to {status, id} or {status, error}.
  function publish(topic, eventType, data) {
    var body = new URLSearchParams();
    body.set("topic", topic);
    if (eventType) { body.set("event", eventType); }
    body.set("data", data);
    return fetch("/publish", { method: "POST", body: body }).then(function (resp) {
      return resp.text().then(function (text) {
        var out = { status: resp.status };
        try {
          var v = JSON.parse(text);
          if (resp.ok) { out.id = v.id; } else { out.error = v.error; }
        } catch (e) {
          out.error = text;
        }
        return out;
      });
    }, function (err) {
      return { status: 0, error: String(err) };
    });
  }

  $("subscribe-form").addEventListener("submit", function (e) {
    e.preventDefault();
    connect();
  });
  $("disconnect").addEventListener("click", disconnect);
  $("clear").addEventListener("click", function () {
    $("events").textContent = "";
  });
  $("publish-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var result = $("pub-result");
    result.textContent = "publishing...";
    result.className = "";
    publish($("pub-topic").value.trim(), $("pub-event").value.trim(), $("pub-data").value).then(function (r) {
      if (r.id !== undefined) {
        result.textContent = "id " + r.id;
        result.setAttribute("data-id", r.id);
      } else {
        result.textContent = "error " + r.status + ": " + r.error;
        result.className = "error";
        result.removeAttribute("data-id");
      }
    });
  });
  setState("closed");
})();
