/**
 * Imported first by main.ts, so its body runs before any other module's: JavaScriptCore's tier-up
 * thresholds are raised until the process serves and has work (`jitPolicy.ts` says why and when they
 * come back). Only main.ts imports this module; everything else uses `jitPolicy.ts`.
 */
import { raiseForStartup } from "./jitPolicy.js"

raiseForStartup()
