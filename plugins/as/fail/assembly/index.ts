import { Host } from "@extism/as-pdk";
import { setError } from "../../shared/assembly/host";

/** Always fails: sets an Extism error and returns 1. */
export function fail(): i32 {
  const input = Host.inputString();
  setError("fail: " + (input.length > 0 ? input : "this plugin always fails"));
  return 1;
}
