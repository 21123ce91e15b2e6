import { Config, Host } from "@extism/as-pdk";
import { http_request } from "@extism/as-pdk/lib/env";
import { http_status_code, logInfo, outputText, readBlock, setError, storeText } from "../../shared/assembly/host";
import { parseJson, quote } from "../../shared/assembly/json";

/**
 * GETs the URL in config key `route` and returns `param: <input> title: <title>`, where title is
 * the `title` field of the JSON response.
 */
export function say_hello(): i32 {
  logInfo("hello this is wasm");
  const route = Config.get("route");
  if (route === null) {
    setError("say_hello: config key 'route' is not set");
    return 1;
  }
  logInfo("calling " + route);

  const response = http_request(storeText('{"method":"GET","url":' + quote(route) + "}"), 0);
  const status = http_status_code();
  if (response == 0 || status < 200 || status > 299) {
    setError("say_hello: GET " + route + " failed with HTTP status " + status.toString());
    return 1;
  }

  const body = String.UTF8.decode(readBlock(response).buffer);
  const json = parseJson(body);
  let title: string | null = null;
  if (json !== null) title = json.getString("title");
  if (title === null) {
    setError("say_hello: response from " + route + " is not JSON with a string field 'title'");
    return 1;
  }
  outputText("param: " + Host.inputString() + " title: " + title!);
  return 0;
}
