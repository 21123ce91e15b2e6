import { Config, Host, Var } from "@extism/as-pdk";
import { outputText } from "../../shared/assembly/host";
import { quote } from "../../shared/assembly/json";

const DEFAULT_VOWELS = "aeiouAEIOU";

/**
 * Counts vowels in the input. `total` is kept in the Extism var "total" (decimal text), like the
 * classic Extism example, so state carried from one call to the next is visible.
 */
export function count_vowels(): i32 {
  const configured = Config.get("vowels");
  const vowels = configured === null ? DEFAULT_VOWELS : configured;
  const input = Host.inputString();

  let count: i64 = 0;
  for (let i = 0; i < input.length; i++) {
    if (vowels.includes(input.charAt(i))) count++;
  }

  const previous = Var.getString("total");
  const total = (previous === null ? 0 : I64.parseInt(previous)) + count;
  Var.set("total", Uint8Array.wrap(String.UTF8.encode(total.toString())));

  outputText('{"count":' + count.toString() + ',"total":' + total.toString() + ',"vowels":' + quote(vowels) + "}");
  return 0;
}
