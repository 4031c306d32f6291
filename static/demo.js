// The demo page: a chat room with a who's-online list, and a panel of events that back-end
// services publish to the "activity" channel over POST /api/publish.
//
// Every piece of text from a user or a service goes into the page with textContent, never as
// HTML. Messages are shown once each, in server order, also across a server restart: see Feed.
import { connect } from "./switchboard.js";

const $ = (selector) => document.querySelector(selector);

const HISTORY = 50; // messages reloaded after a reconnect that could not recover
const MAX_SHOWN = 200; // per list; the oldest go first

/** A new element with its text set as text: the only way user text reaches the page. */
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A random id, even where crypto.randomUUID is missing (pages served over plain http). */
function randomId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.message ?? `${url} answered ${response.status}`);
  return body;
}

const fetchToken = async (name) => (await fetchJson(`/demo/token?name=${encodeURIComponent(name)}`)).token;

function notice(text) {
  $("#notice").textContent = text;
}

// Epochs in the order this page met them: a later server start ranks after an earlier one.
const epochs = [];
function epochRank(epoch) {
  if (!epochs.includes(epoch)) epochs.push(epoch);
  return epochs.indexOf(epoch);
}
const before = (a, b) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

/**
 * One channel shown as a list, each message once, ordered by (epoch, offset).
 *
 * A message can reach the page more than once: live, from history delivered on subscribe, from
 * the history reloaded after a restart, or published twice because a reconnect made its first
 * attempt's fate unknown. `keyOf` names the message (the chat puts an id of its own in `data`),
 * and a name already shown is not shown again. Messages not yet confirmed by the server are
 * shown at the end, marked pending, and move into place when they come back.
 */
class Feed {
  constructor(client, list, channel, { keyOf, render }) {
    Object.assign(this, { list, channel, keyOf, render });
    this.items = new Map(); // key -> {key, li, rank, pending}
    this.sorted = []; // items in list order
    this.typed = 0; // pending messages, in the order they were typed
    this.reloads = 0;
    client.subscribe(channel, (data, message) => this.show(message), { since: 0 });
    client.on("subscribed", (result) => {
      if (result.channel === channel && !result.recovered) this.reload().catch((error) => notice(error.message));
    });
  }

  show(message) {
    const key = this.keyOf(message);
    let item = this.items.get(key);
    if (item && !item.pending) return;
    if (!item) {
      item = { key, li: this.render(message) };
      this.items.set(key, item);
    }
    item.li.classList.remove("pending", "failed");
    Object.assign(item, { pending: false, rank: [epochRank(message.epoch), message.offset] });
    this.place(item);
  }

  showPending(key, li) {
    li.classList.add("pending");
    const item = { key, li, pending: true, rank: [Infinity, this.typed++] };
    this.items.set(key, item);
    this.place(item);
  }

  fail(key, reason) {
    const item = this.items.get(key);
    if (!item?.pending) return;
    item.li.classList.replace("pending", "failed");
    item.li.title = `not sent: ${reason}`;
  }

  /** After a restart the server no longer has what this page missed: ask the history route. */
  async reload() {
    const url = `/demo/history/${encodeURIComponent(this.channel)}?limit=${HISTORY}`;
    const { epoch, messages } = await fetchJson(url);
    for (const message of messages) this.show({ ...message, epoch });
    // How many reloads are done, for whoever wants to know (the browser tests wait for it).
    this.list.dataset.reloads = ++this.reloads;
  }

  place(item) {
    const index = this.sorted.indexOf(item);
    if (index >= 0) this.sorted.splice(index, 1);
    let at = this.sorted.length;
    while (at > 0 && before(item.rank, this.sorted[at - 1].rank)) at -= 1;
    const stuck = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8;
    this.list.insertBefore(item.li, this.sorted[at]?.li ?? null);
    this.sorted.splice(at, 0, item);
    for (const old of this.sorted.splice(0, Math.max(0, this.sorted.length - MAX_SHOWN))) {
      old.li.remove();
      this.items.delete(old.key);
    }
    if (stuck) this.list.scrollTop = this.list.scrollHeight;
  }
}

function renderChat(from, data) {
  const li = element("li");
  li.append(element("span", "from", from ?? "service"));
  li.append(element("span", "text", typeof data?.text === "string" ? data.text : JSON.stringify(data)));
  return li;
}

function renderActivity(message) {
  const li = element("li");
  li.append(element("span", "offset", `#${message.offset}`));
  li.append(element("code", "data", JSON.stringify(message.data)));
  return li;
}

/** Who is online in the room: filled from `presence`, then kept by join and leave. */
class OnlineList {
  constructor(client, list, channel) {
    Object.assign(this, { client, list, channel });
    this.users = new Set();
    client.on("join", ({ channel: c, member }) => c === channel && this.update(() => this.users.add(member.user)));
    client.on("leave", ({ channel: c, member }) => c === channel && this.update(() => this.users.delete(member.user)));
    client.on("disconnected", () => list.classList.add("stale"));
    // Each (re)subscription: the reply to `presence` includes every join and leave pushed before it.
    client.on("subscribed", async (result) => {
      if (result.channel !== channel) return;
      try {
        const members = await client.presence(channel);
        this.update(() => (this.users = new Set(members.map((member) => member.user))));
        list.classList.remove("stale");
      } catch (error) {
        if (error.code !== "disconnected") notice(error.message);
      }
    });
  }

  update(change) {
    change();
    this.list.replaceChildren(
      ...[...this.users].sort().map((user) => {
        const li = element("li");
        li.append(element("span", "name", user));
        if (user === this.client.user) li.append(element("span", "you", "you"));
        return li;
      }),
    );
  }
}

function showState(state, detail) {
  const badge = $("#status");
  badge.dataset.state = state;
  if (state === "connected") {
    badge.textContent = `connected as ${detail.user}`;
  } else if (state === "connecting") {
    badge.textContent = detail.attempt > 1 ? `reconnecting (try ${detail.attempt})` : "connecting";
  } else {
    const retry = detail.retryIn === null ? "" : `, retry in ${Math.ceil(detail.retryIn / 1000)} s`;
    badge.textContent = `offline${retry}`;
  }
}

function start(name, room) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // A fresh token for every attempt: the old one may have expired, or the server's secret changed.
  const client = connect(`${scheme}://${location.host}/ws`, { token: () => fetchToken(name) });
  for (const state of ["connecting", "connected", "disconnected"]) {
    client.on(state, (detail) => showState(state, detail));
  }
  client.on("connected", () => notice(""));
  client.on("error", (error) => notice(error.message));

  const channel = `presence-${room}`;
  const chat = new Feed(client, $("#messages"), channel, {
    keyOf: (message) => message.data?.id ?? `${message.epoch}:${message.offset}`,
    render: (message) => renderChat(message.from, message.data),
  });
  new OnlineList(client, $("#online"), channel);
  new Feed(client, $("#activity"), "activity", {
    keyOf: (message) => `${message.epoch}:${message.offset}`,
    render: renderActivity,
  });

  $("#room-name").textContent = room;
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = event.target.elements.text;
    const text = input.value.trim();
    input.value = "";
    if (text) send(client, chat, channel, name, text);
  });
}

/** Publish until the server confirms: a publish cut off in flight may or may not have been
 * stored, so it goes again with the same id, and the Feed shows it once either way. */
async function send(client, chat, channel, name, text) {
  const data = { id: randomId(), text };
  chat.showPending(data.id, renderChat(name, data));
  for (;;) {
    try {
      await client.publish(channel, data);
      return;
    } catch (error) {
      if (error.code !== "disconnected") {
        chat.fail(data.id, error.message);
        return;
      }
    }
  }
}

$("#join").addEventListener("submit", async (event) => {
  event.preventDefault();
  const fields = event.target.elements;
  const [name, room] = [fields.name.value.trim(), fields.room.value.trim()];
  try {
    await fetchToken(name); // says plainly when the demo is off or the name is refused
  } catch (error) {
    $("#join-error").textContent = error.message;
    return;
  }
  document.body.classList.add("joined");
  start(name, room);
  $("#composer input").focus();
});
