/**
 * From here on, effect's `FastCheck` module resolves to a stub in this Bun process (issue 16 item 5).
 * `effect/Schema` and `effect/Arbitrary` import `./FastCheck.js`, which re-exports all of
 * `fast-check` (222 modules, and `pure-rand`'s 15) for arbitraries the service never builds;
 * loaded, they stayed in the idle process (module records, sources, bytecode). A Bun plugin answers
 * that import with `fastCheckStub.ts`'s exports (every name `fast-check` exports, each a function
 * that throws saying why). Bun hands a runtime plugin relative specifiers, not a package's bare name
 * (`fast-check` from `effect/dist/esm/FastCheck.js` never reaches it), so the relative import inside
 * effect's `dist` is the one answered. main.ts imports this module before it imports the process
 * with `import()`: a static import's whole graph is resolved before any module body runs, so the
 * plugin must be in place before the graph that reaches `effect/Schema` is asked for. Registered in
 * code rather than by `bunfig.toml`'s `preload`, so it holds for every working directory
 * `bun src/main.ts` is started from (the embedded tests start it in an empty one).
 * `test/e2e/process.test.ts` lists the modules the running process loaded. Outside Bun (the Node
 * tests, whose property tests use fast-check) it does nothing.
 */
import { fastCheckStubExports } from "./fastCheckStub.js"

/**
 * The part of Bun's plugin builder used here and by scripts/bundle.ts (the project has no Bun type
 * package); `Loaded` is what a load callback gives back: module exports at run time, source to the bundler.
 */
export interface BunPluginBuild<Loaded> {
  readonly onResolve: (
    options: { readonly filter: RegExp },
    resolve: (args: { readonly path: string; readonly importer: string }) => { readonly path: string; readonly namespace: string } | undefined,
  ) => void
  readonly onLoad: (options: { readonly filter: RegExp; readonly namespace: string }, load: () => Loaded) => void
}

interface BunPlugins {
  readonly plugin?: (plugin: { readonly name: string; readonly setup: (build: BunPluginBuild<{ readonly exports: Record<string, unknown>; readonly loader: "object" }>) => void }) => void
}

/** effect's `FastCheck` module as its own modules import it (`effect/dist/esm/Schema.js`: `./FastCheck.js`). */
export const isEffectFastCheckImport = (specifier: string, importer: string): boolean =>
  specifier === "./FastCheck.js" && /[\\/]effect[\\/]dist[\\/](esm|cjs)[\\/][^\\/]+$/.test(importer)

const NAMESPACE = "mana-ai-no-fast-check"

;(globalThis as { Bun?: BunPlugins }).Bun?.plugin?.({
  name: "mana-ai: no fast-check",
  setup(build) {
    build.onResolve({ filter: /^\.\/FastCheck\.js$/ }, (args) =>
      isEffectFastCheckImport(args.path, args.importer) ? { path: "effect/FastCheck", namespace: NAMESPACE } : undefined,
    )
    build.onLoad({ filter: /.*/, namespace: NAMESPACE }, () => ({ exports: fastCheckStubExports(), loader: "object" }))
  },
})
