// The React example: a chat room with who's online over the browser client (/ws), and an
// activity feed over GraphQL (/graphql, the graphql-ws client). Both use one token per user
// from the demo's token route, and both resume after a reconnect. React renders every user and
// service text as text.
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { createClient } from "graphql-ws";
import { connect } from "../../../static/switchboard.js";
import { follow } from "./feed.js";

const ACTIVITY = "activity";

async function fetchToken(name) {
  const response = await fetch(`/demo/token?name=${encodeURIComponent(name)}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.message);
  return body.token;
}

/** The page's two clients for `name`: made when the room opens, closed when it goes. */
function useClients(name) {
  const [clients, setClients] = useState(null);
  useEffect(() => {
    const wsBase = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
    const token = () => fetchToken(name);
    const chat = connect(`${wsBase}/ws`, { token });
    const graphql = createClient({
      url: `${wsBase}/graphql`,
      connectionParams: async () => ({ token: await token() }),
      retryAttempts: Infinity,
      shouldRetry: () => true, // a server restarting refuses connections for a moment
    });
    setClients({ chat, graphql });
    return () => {
      chat.close();
      graphql.dispose();
    };
  }, [name]);
  return clients;
}

function useConnectionState(chat) {
  const [state, setState] = useState(chat.state);
  useEffect(() => {
    const offs = ["connecting", "connected", "disconnected"].map((s) => chat.on(s, () => setState(s)));
    return () => offs.forEach((off) => off());
  }, [chat]);
  return state;
}

function Chat({ chat, channel }) {
  const [messages, setMessages] = useState([]);
  const [text, setText] = useState("");
  useEffect(() => {
    const seen = new Set();
    const subscription = chat.subscribe(channel, (data, message) => {
      const key = `${message.epoch}:${message.offset}`;
      if (seen.has(key)) return;
      seen.add(key);
      setMessages((shown) => [...shown, { key, from: message.from, text: data.text }]);
    });
    return () => subscription.unsubscribe();
  }, [chat, channel]);
  const send = (event) => {
    event.preventDefault();
    if (text.trim()) chat.publish(channel, { text: text.trim() });
    setText("");
  };
  return (
    <section className="chat">
      <h2>
        Room <span id="room-name">{channel.replace(/^presence-/, "")}</span>
      </h2>
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.key}>
            <span className="from">{m.from}</span> <span className="text">{m.text}</span>
          </li>
        ))}
      </ol>
      <form id="composer" onSubmit={send}>
        <input name="text" value={text} onChange={(e) => setText(e.target.value)} aria-label="Message" />
        <button>Send</button>
      </form>
    </section>
  );
}

function Online({ chat, channel }) {
  const [members, setMembers] = useState([]);
  useEffect(() => {
    const offs = [
      chat.on("subscribed", async (detail) => {
        if (detail.channel === channel) setMembers(await chat.presence(channel));
      }),
      chat.on("join", ({ channel: c, member }) => {
        if (c === channel) setMembers((now) => [...now.filter((m) => m.user !== member.user), member]);
      }),
      chat.on("leave", ({ channel: c, member }) => {
        if (c === channel) setMembers((now) => now.filter((m) => m.user !== member.user));
      }),
    ];
    return () => offs.forEach((off) => off());
  }, [chat, channel]);
  const names = members.map((m) => m.user).sort();
  return (
    <section>
      <h2>Online</h2>
      <ul id="online">
        {names.map((user) => (
          <li key={user} className="name">
            {user}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Activity({ graphql }) {
  const [events, setEvents] = useState([]);
  const [problem, setProblem] = useState("");
  useEffect(
    () =>
      follow(graphql, ACTIVITY, {
        onReset: (messages) => setEvents(messages),
        onMessage: (message) => setEvents((shown) => [...shown, message]),
        onError: (error) => setProblem(Array.isArray(error) ? error[0].message : String(error.reason ?? error)),
      }),
    [graphql],
  );
  return (
    <section>
      <h2>Activity</h2>
      <p className="hint">
        Events published to <code>activity</code>, by any protocol, through a GraphQL subscription.
      </p>
      <p id="activity-problem" role="alert">
        {problem}
      </p>
      <ol id="activity">
        {events.map((e) => (
          <li key={`${e.epoch}:${e.offset}`} data-offset={e.offset}>
            {typeof e.data === "string" ? e.data : JSON.stringify(e.data)}
          </li>
        ))}
      </ol>
    </section>
  );
}

function Room({ name, room }) {
  const clients = useClients(name);
  return clients && <Connected {...clients} name={name} channel={`presence-${room}`} />;
}

function Connected({ chat, graphql, name, channel }) {
  const state = useConnectionState(chat);
  return (
    // demo.css (the demo page's styles, served by Switchboard) shows the room inside `.joined`.
    <div className="joined">
      <header>
        <h1>Switchboard + React</h1>
        <span id="status" role="status" data-state={state}>
          {state} as {name}
        </span>
      </header>
      <main>
        <Chat chat={chat} channel={channel} />
        <aside>
          <Online chat={chat} channel={channel} />
          <Activity graphql={graphql} />
        </aside>
      </main>
    </div>
  );
}

function App() {
  const [joined, setJoined] = useState(null);
  if (joined) return <Room {...joined} />;
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    setJoined({ name: form.get("name").trim(), room: form.get("room").trim() });
  };
  return (
    <form id="join" onSubmit={submit}>
      <h2>Join a room</h2>
      <label>
        Your name <input name="name" required maxLength={32} />
      </label>
      <label>
        Room <input name="room" required maxLength={64} defaultValue="lobby" pattern="[A-Za-z0-9_\-=@,.;:]+" />
      </label>
      <button>Join</button>
    </form>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
