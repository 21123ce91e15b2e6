import { Host } from "@extism/as-pdk";
import { http_request } from "@extism/as-pdk/lib/env";
import { http_headers, http_status_code, outputText, readBlock, setError, storeText } from "../../shared/assembly/host";
import { JsonKind, JsonValue, parseJson, quote } from "../../shared/assembly/json";

// Egress test helper. A request is {"url": "...", "method"?: "GET", "headers"?: {...}, "body"?: "..."};
// a result is {"status": <int>, "body": "<response body as text>"}.

/** Performs one request. */
export function fetch(): i32 {
  const request = parseJson(Host.inputString());
  if (request === null || request.kind != JsonKind.Object) {
    setError("fetch: input must be a JSON object {url, method?, headers?, body?}");
    return 1;
  }
  const result = perform(request);
  if (result === null) return 1;
  outputText(result);
  return 0;
}

/** Performs each request of a JSON array in order. */
export function fetch_all(): i32 {
  const requests = parseJson(Host.inputString());
  if (requests === null || requests.kind != JsonKind.Array) {
    setError("fetch_all: input must be a JSON array of {url, method?, headers?, body?}");
    return 1;
  }
  const results = new Array<string>();
  for (let i = 0; i < requests.items.length; i++) {
    const result = perform(requests.items[i]);
    if (result === null) return 1;
    results.push(result);
  }
  outputText("[" + results.join(",") + "]");
  return 0;
}

/** The result JSON, or null after setting an error. */
function perform(request: JsonValue): string | null {
  const url = request.getString("url");
  if (url === null) {
    setError("fetch: request needs a string field 'url'");
    return null;
  }
  const method = request.getString("method");
  let head = '{"url":' + quote(url) + ',"method":' + quote(method === null ? "GET" : method);
  const headers = request.get("headers");
  if (headers !== null && headers.kind == JsonKind.Object) head += ',"headers":' + headers.toJson();
  head += "}";

  const body = request.getString("body");
  const bodyOffset: u64 = body === null ? 0 : storeText(body);
  const response = http_request(storeText(head), bodyOffset);
  const status = http_status_code();
  if (response == 0) {
    // The host returns no block when it could not deliver the body (e.g. a size limit).
    setError("fetch: request to " + url + " failed (HTTP status " + status.toString() + ")");
    return null;
  }
  const text = String.UTF8.decode(readBlock(response).buffer);
  return '{"status":' + status.toString() + ',"body":' + quote(text) + "}";
}

/**
 * Performs one request, then answers its result with "headers": what http_headers returned, as JSON
 * (null when the host returned no block: response headers not enabled).
 */
export function fetch_headers(): i32 {
  const request = parseJson(Host.inputString());
  if (request === null || request.kind != JsonKind.Object) {
    setError("fetch_headers: input must be a JSON object {url, method?, headers?, body?}");
    return 1;
  }
  const result = perform(request);
  if (result === null) return 1;
  outputText(result.slice(0, result.length - 1) + ',"headers":' + lastHeaders() + "}");
  return 0;
}

// Compiled after perform, so the module imports http_request before http_headers: the SDK on Node 24
// binds host functions imported before http_request to its "not enabled" stubs.
function lastHeaders(): string {
  const headers = http_headers();
  return headers == 0 ? "null" : String.UTF8.decode(readBlock(headers).buffer);
}
