/**
 * What effect's `FastCheck` module resolves to in the resident process (`withoutFastCheck.ts`): every name
 * `fast-check` exports, each a function that throws. `effect/Schema` imports `effect/FastCheck`
 * (`export * from "fast-check"`) for its arbitraries, which the service never builds; the real
 * package is 222 modules the idle process would carry (issue 16 item 5). Anything that does call
 * it fails at once, saying why. `test/layers/withoutFastCheck.test.ts` keeps this list equal to the
 * installed package's exports.
 */
export const FAST_CHECK_EXPORTS = [
  "Arbitrary", "ExecutionStatus", "PreconditionFailure", "Random", "Stream", "Value", "VerbosityLevel",
  "__commitHash", "__type", "__version", "anything", "array", "ascii", "asciiString", "assert",
  "asyncDefaultReportMessage", "asyncModelRun", "asyncProperty", "asyncStringify", "asyncToStringMethod", "base64",
  "base64String", "bigInt", "bigInt64Array", "bigIntN", "bigUint", "bigUint64Array", "bigUintN", "boolean", "char",
  "char16bits", "check", "clone", "cloneIfNeeded", "cloneMethod", "commands", "compareBooleanFunc", "compareFunc",
  "configureGlobal", "constant", "constantFrom", "context", "createDepthIdentifier", "date", "defaultReportMessage",
  "dictionary", "domain", "double", "emailAddress", "falsy", "float", "float32Array", "float64Array", "fullUnicode",
  "fullUnicodeString", "func", "gen", "getDepthContextFor", "hasAsyncToStringMethod", "hasCloneMethod",
  "hasToStringMethod", "hash", "hexa", "hexaString", "infiniteStream", "int16Array", "int32Array", "int8Array",
  "integer", "ipV4", "ipV4Extended", "ipV6", "json", "jsonValue", "letrec", "limitShrink", "lorem", "mapToConstant",
  "maxSafeInteger", "maxSafeNat", "memo", "mixedCase", "modelRun", "nat", "noBias", "noShrink", "object", "oneof",
  "option", "pre", "property", "readConfigureGlobal", "record", "resetConfigureGlobal", "sample", "scheduledModelRun",
  "scheduler", "schedulerFor", "shuffledSubarray", "sparseArray", "statistics", "stream", "string", "string16bits",
  "stringMatching", "stringOf", "stringify", "subarray", "toStringMethod", "tuple", "uint16Array", "uint32Array",
  "uint8Array", "uint8ClampedArray", "ulid", "unicode", "unicodeJson", "unicodeJsonValue", "unicodeString",
  "uniqueArray", "uuid", "uuidV", "webAuthority", "webFragments", "webPath", "webQueryParameters", "webSegment",
  "webUrl",
] as const

export const unavailableMessage = (name: string) =>
  `fast-check.${name}: fast-check is not loaded in the mana-ai process (src/layers/withoutFastCheck.ts stubs it; ` +
  "Schema arbitraries and property tests belong in the tests)"

/** The stub module's exports: each name a function (callable and constructible) that throws. */
export const fastCheckStubExports = (): Record<string, unknown> =>
  Object.fromEntries(
    FAST_CHECK_EXPORTS.map((name) => [
      name,
      function unavailable(): never {
        throw new Error(unavailableMessage(name))
      },
    ]),
  )
