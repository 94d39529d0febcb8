// The upstream's side of GATEWAY_SPEC.md in plain Node (node:crypto, no dependencies):
// refuse a request that did not come through the gateway. The docs' Node snippet.
//
//   import { verifyGateway } from "./gateway_verify.mjs";
//   const reason = verifyGateway({ secret, method: req.method, target: req.url,
//                                  headers: req.headers, body, seen });
//   // null: came through the gateway; else a string saying why not (answer 401)
//
// Also a tiny server for tests: `node devkit/gateway_verify.mjs serve <port> <secret>`
// listens on 127.0.0.1:<port>, answers 200 JSON for a request that passes the check and
// 401 JSON with the reason otherwise.
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";

// secret: Buffer or string; target: path and query exactly as received (req.url);
// headers: lower-case names (as node:http gives them); body: Buffer (not checked when the
// gateway sent UNSIGNED-PAYLOAD); seen: a Map the caller keeps, charge id -> seconds.
export function verifyGateway({ secret, method, target, headers, body, seen, now }) {
  const h = (name) => String(headers[name] ?? "");
  const ts = h("x-payment-timestamp");
  const charge = h("x-payment-charge-id");
  const bodyHash = h("x-payment-body-sha256");
  const sigs = h("x-payment-signature");
  if (!/^[0-9]+$/.test(ts) || !charge || !bodyHash || !sigs) {
    return "missing or malformed X-Payment-* headers";
  }
  now = now ?? Date.now() / 1000;
  if (Math.abs(now - Number(ts)) > 300) return "timestamp outside 300 s";
  const canonical = ["x402-gateway-v1", ts, method.toUpperCase(), target, charge, bodyHash]
    .join("\n");
  const want = Buffer.from("v1=" + createHmac("sha256", secret).update(canonical).digest("hex"));
  const ok = sigs.split(" ").some((s) => {
    const got = Buffer.from(s);
    return got.length === want.length && timingSafeEqual(got, want);
  });
  if (!ok) return "bad signature";
  if (bodyHash !== "UNSIGNED-PAYLOAD" &&
      bodyHash !== createHash("sha256").update(body).digest("hex")) {
    return "body hash mismatch";
  }
  for (const [id, t] of seen) if (now - t > 600) seen.delete(id);
  if (seen.has(charge)) return "charge id already used";
  seen.set(charge, now);
  return null;
}

function serve(port, secret) {
  const seen = new Map();
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const reason = verifyGateway({
        secret, method: req.method, target: req.url, headers: req.headers, body, seen,
      });
      const answer = reason === null
        ? { ok: true, method: req.method, target: req.url, rail: req.headers["x-payment-rail"] ?? null,
            payer: req.headers["x-payment-payer"] ?? null, charge_id: req.headers["x-payment-charge-id"] }
        : { error: "gateway_check_failed", reason };
      res.writeHead(reason === null ? 200 : 401, { "content-type": "application/json" });
      res.end(JSON.stringify(answer));
    });
  });
  server.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href && process.argv[2] === "serve") {
  const [port, secret] = [Number(process.argv[3]), process.argv[4]];
  if (!Number.isInteger(port) || !secret) {
    console.error("usage: node gateway_verify.mjs serve <port> <secret>");
    process.exit(2);
  }
  serve(port, secret);
}
