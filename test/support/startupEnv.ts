/** The start-up configuration read from an environment map as main reads it (an empty value means unset). */
import { Effect, Either } from "effect"
import { environmentProvider, loadStartupConfig, type StartupConfig } from "../../src/layers/startupConfig.js"

export const load = (env: Record<string, string>) =>
  Effect.runSync(Effect.either(loadStartupConfig).pipe(Effect.withConfigProvider(environmentProvider(env))))

/** The refusal's message; throws when the environment is accepted. */
export const refused = (env: Record<string, string>): string => {
  const result = load(env)
  if (Either.isRight(result)) throw new Error(`accepted ${JSON.stringify(env)}`)
  return result.left.message
}

/** The configuration; throws with the refusal's message when the environment is refused. */
export const accepted = (env: Record<string, string>): StartupConfig => {
  const result = load(env)
  if (Either.isLeft(result)) throw new Error(result.left.message)
  return result.right
}
