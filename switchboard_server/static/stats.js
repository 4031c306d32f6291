// The stats page: polls GET /stats.json (every worker's metrics added up) with the API key, shows
// the figures, and charts open connections and messages per second over the last five minutes.
//
// The key is asked for once per tab and kept in sessionStorage, never in a URL. Every figure goes
// into the page with textContent, never as HTML.

const $ = (selector) => document.querySelector(selector);

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
const KEY = "switchboard.apiKey";

const points = []; // {time, connections, inRate, outRate}, oldest first, at most WINDOW_MS old
let previous = null; // the last snapshot, to turn totals into rates
let timer = null;

const total = (snapshot, name) => snapshot.totals[name] ?? 0;
const integer = (value) => Math.round(value).toLocaleString("en");

function setState(state, text) {
  $("#state").dataset.state = state;
  $("#state").textContent = text;
}

function show(id, text, detail) {
  const node = $(id);
  node.textContent = text;
  if (detail) {
    const small = document.createElement("small");
    small.textContent = detail;
    node.append(small);
  }
}

/** Per second between two snapshots; null after a server restart (totals went down). */
function rate(snapshot, name) {
  if (previous === null) return null;
  const seconds = snapshot.time - previous.time;
  const delta = total(snapshot, name) - total(previous, name);
  return seconds > 0 && delta >= 0 ? delta / seconds : null;
}

function bytes(perSecond) {
  if (perSecond === null) return "–";
  const units = ["B", "kB", "MB", "GB"];
  let value = perSecond;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function render(snapshot) {
  const inRate = rate(snapshot, "messages_in_total");
  const outRate = rate(snapshot, "messages_out_total");
  const perSecond = (value) => (value === null ? "–" : value.toFixed(1));
  show("#connections", integer(total(snapshot, "connections_open")));
  show("#in-rate", perSecond(inRate));
  show("#out-rate", perSecond(outRate));
  show("#bytes-rate", `${bytes(rate(snapshot, "bytes_in_total"))} / ${bytes(rate(snapshot, "bytes_out_total"))}`);
  show("#opened", integer(total(snapshot, "connections_opened_total")));
  const sources = snapshot.by_label.publishes_total ?? {};
  show("#publishes", `${integer(sources.ws ?? 0)} / ${integer(sources.http ?? 0)}`);
  show("#slow", integer(total(snapshot, "slow_consumer_disconnects_total")));
  const codes = Object.entries(snapshot.by_label.errors_total ?? {}).sort((a, b) => b[1] - a[1]);
  const breakdown = codes.map(([code, count]) => `${code} ${integer(count)}`).join(", ");
  show("#errors", integer(total(snapshot, "errors_total")), breakdown);
  const count = rate(snapshot, "fanout_latency_seconds_count");
  const sum = rate(snapshot, "fanout_latency_seconds_sum");
  show("#latency", count ? `${((sum / count) * 1000).toFixed(2)} ms` : "–");
  show("#queue-high", integer(total(snapshot, "send_queue_high_water")));
  show("#reconnects", integer(total(snapshot, "broker_reconnects_total")));
  show("#updated", new Date(snapshot.time * 1000).toLocaleTimeString("en-GB"));

  const now = snapshot.time * 1000;
  points.push({ time: now, connections: total(snapshot, "connections_open"), inRate, outRate });
  while (points.length && points[0].time < now - WINDOW_MS) points.shift();
  chart($("#connections-chart"), now, [{ key: "connections", color: "--accent" }]);
  chart($("#messages-chart"), now, [
    { key: "inRate", color: "--accent" },
    { key: "outRate", color: "--second" },
  ]);
  previous = snapshot;
}

/** Lines for `series` over the last WINDOW_MS, from 0 to a rounded-up maximum. */
function chart(canvas, now, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const context = canvas.getContext("2d");
  context.scale(ratio, ratio);
  const style = getComputedStyle(document.documentElement);
  const values = points.flatMap((point) => series.map(({ key }) => point[key] ?? 0));
  const top = niceCeiling(Math.max(1, ...values));
  const left = 48;
  const bottom = height - 18;
  const x = (time) => left + ((time - (now - WINDOW_MS)) / WINDOW_MS) * (width - left - 4);
  const y = (value) => bottom - (value / top) * (bottom - 6);

  context.font = "11px system-ui, sans-serif";
  context.fillStyle = style.getPropertyValue("--muted").trim();
  context.strokeStyle = style.getPropertyValue("--line").trim();
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    context.beginPath();
    context.moveTo(left, y(value));
    context.lineTo(width, y(value));
    context.stroke();
    context.fillText(Number.isInteger(value) ? integer(value) : value.toFixed(1), 4, y(value) + 4);
  }
  context.fillText("−5 min", left, height - 4);
  context.fillText("now", width - 26, height - 4);

  context.lineWidth = 2;
  for (const { key, color } of series) {
    context.strokeStyle = style.getPropertyValue(color).trim();
    context.beginPath();
    let drawing = false;
    for (const point of points) {
      if (point[key] === null) {
        drawing = false; // no rate for the first sample, nor across a restart
        continue;
      }
      if (drawing) context.lineTo(x(point.time), y(point[key]));
      else context.moveTo(x(point.time), y(point[key]));
      drawing = true;
    }
    context.stroke();
  }
}

/** 1, 2 or 5 times a power of ten, at least `value`. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((step) => step >= value);
}

async function poll() {
  const key = sessionStorage.getItem(KEY);
  try {
    const response = await fetch("stats.json", { headers: { Authorization: `Bearer ${key}` } });
    const body = await response.json();
    if (response.status === 401 || response.status === 403) {
      askForKey(body.message ?? "the server refused this key");
      return;
    }
    if (!response.ok) throw new Error(body.message ?? `the server answered ${response.status}`);
    render(body);
    setState("live", "live");
  } catch (error) {
    setState("failed", `no answer: ${error.message}`);
  }
  timer = setTimeout(poll, POLL_MS);
}

function askForKey(problem) {
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  document.body.classList.remove("live");
  $("#key-error").textContent = problem;
  setState("waiting", "waiting for the API key");
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, event.target.key.value);
  event.target.reset();
  $("#key-error").textContent = "";
  document.body.classList.add("live");
  poll();
});

if (sessionStorage.getItem(KEY) !== null) {
  document.body.classList.add("live");
  poll();
}
