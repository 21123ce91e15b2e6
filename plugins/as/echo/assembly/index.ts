import { Host } from "@extism/as-pdk";
import { outputBytes } from "../../shared/assembly/host";

/** Returns the input bytes unchanged (binary-safe). */
export function echo(): i32 {
  outputBytes(Host.input());
  return 0;
}
