import { logDebug, logError, logInfo, logTrace, logWarn, outputText } from "../../shared/assembly/host";

/** Logs one message at each level, lowest first, and returns "done". */
export function log_all(): i32 {
  logTrace("trace message");
  logDebug("debug message");
  logInfo("info message");
  logWarn("warn message");
  logError("error message");
  outputText("done");
  return 0;
}
