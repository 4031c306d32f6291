// The React example, built by Vite into dist/ and served by Switchboard itself at
// /examples/react-graphql/ when SWITCHBOARD_DEMO=1 (npm run build:example).
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/examples/react-graphql/",
  // JSX with React's automatic runtime, by Vite's own transform: no plugin needed.
  oxc: { jsx: { runtime: "automatic" } },
  build: { outDir: "dist", emptyOutDir: true },
});
