/**
 * The room page: messages (live, and older ones through the `older` RPC), who is online (the
 * `presence()` list kept up by join and leave), and who is typing. Every check is the server's:
 * the form sends what was typed, and shows the publish hook's refusal as it comes.
 */
import { connect } from "/assets/switchboard.js";

const { room } = document.body.dataset;
const channel = `presence-${room}`;
const TYPING_EVERY = 2000; // ms between two notices from one typist...
const TYPING_SHOWN = 3000; // ...and how long one is shown: a pause in typing makes it go away.

const $ = (id) => document.getElementById(id);
const client = connect(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rt/ws`);

// -- messages ------------------------------------------------------------------------------------

let oldest = null; // the smallest message id shown: where "load older" goes on from

/** Show a stored message in id order, once: a live one may also come with a page of older ones. */
function show(message) {
  const list = $("messages");
  if (list.querySelector(`[data-id="${message.id}"]`)) return;
  const item = document.createElement("li");
  item.dataset.id = message.id;
  item.title = message.created;
  const user = document.createElement("b");
  user.textContent = message.user; // user text goes in as text, never as HTML
  item.append(user, `: ${message.text}`);
  const later = [...list.children].find((shown) => Number(shown.dataset.id) > message.id);
  list.insertBefore(item, later ?? null);
  oldest = oldest === null ? message.id : Math.min(oldest, message.id);
}

/** The page of messages before the oldest shown (the newest page at first), through the RPC. */
async function loadOlder() {
  const { messages, more } = await client.rpc("older", { room, before: oldest });
  messages.forEach(show);
  $("older").hidden = !more;
}

client.subscribe(channel, (data) => show(data));
$("older").addEventListener("click", () => loadOlder().catch(problem));

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("problem").textContent = "";
  try {
    await client.publish(channel, { text: $("text").value });
    $("text").value = "";
  } catch (error) {
    problem(error);
  }
});

function problem(error) {
  $("problem").textContent = error.message;
}

// -- who is online -------------------------------------------------------------------------------

const online = new Map(); // user -> info

function showOnline() {
  const names = [...online.values()].map((info) => info.name).sort();
  $("online").replaceChildren(
    ...names.map((name) => Object.assign(document.createElement("li"), { textContent: name })),
  );
}

// Presence is state: ask for the list on every (re)subscription, then apply joins and leaves.
client.on("subscribed", async ({ channel: name, resumed, recovered }) => {
  if (name !== channel) return;
  const members = await client.presence(channel);
  online.clear();
  members.forEach(({ user, info }) => online.set(user, info));
  showOnline();
  if (!resumed) await loadOlder();
  else if (!recovered) (await client.rpc("older", { room, before: null })).messages.forEach(show);
  $("status").dataset.ready = "yes";
});
client.on("join", ({ channel: name, member }) => {
  if (name !== channel) return;
  online.set(member.user, member.info);
  showOnline();
});
client.on("leave", ({ channel: name, member }) => {
  if (name !== channel) return;
  online.delete(member.user);
  showOnline();
});

// -- typing --------------------------------------------------------------------------------------

const typists = new Map(); // user -> until when to show them

function showTyping() {
  const now = Date.now();
  for (const [user, until] of typists) if (until <= now) typists.delete(user);
  const names = [...typists.keys()].sort();
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

// The typing route is a socket of its own, a sync route on the server: whatever is sent on it
// says "I am typing", and it pushes everyone's notices (ours too) as native messages.
const typingUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rt/ws/typing/${room}`;
let typing = null;

function openTyping() {
  typing = new WebSocket(typingUrl);
  typing.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type !== "message" || message.from === client.user) return;
    typists.set(message.from, Date.now() + TYPING_SHOWN);
    showTyping();
    setTimeout(showTyping, TYPING_SHOWN + 50);
  };
  // A lost notice is no loss: come back a little later, as long as the page is open.
  typing.onclose = (event) => {
    if (event.code !== 1008) setTimeout(openTyping, 1000);
  };
}
openTyping();

let lastNotice = 0;
$("text").addEventListener("input", () => {
  if (Date.now() - lastNotice < TYPING_EVERY || !$("text").value.trim()) return;
  lastNotice = Date.now();
  if (typing.readyState === WebSocket.OPEN) typing.send("typing");
});

// -- the connection ------------------------------------------------------------------------------

client.on("connected", () => ($("status").dataset.state = "connected"));
client.on("disconnected", () => ($("status").dataset.state = "disconnected"));
client.on("error", (error) => {
  problem(error);
  // Refused at the handshake (logged out in another tab): retrying cannot help, logging in can.
  if (client.state !== "connected") client.close();
});
