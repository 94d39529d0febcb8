// One paid request with an official x402 TypeScript client, for the tests.
//
//   node devkit/x402_node/pay.mjs --client fetch-v2|x402-fetch --family evm|svm \
//     --url URL [--method GET] [--header "Name: value"]... [--body TEXT]
//     [--version 2|1] [--rpc URL] [--max UNITS] --key KEY
//
// KEY is a 0x hex private key (evm) or a base58 64-byte secret key (svm). The client
// asks URL, gets our 402, signs and retries; we print one JSON line on stdout:
// {"status", "headers", "paymentResponse", "body", "json"} or {"error"} (exit 2).
// `--version 1` with fetch-v2 hides the v2 PAYMENT-REQUIRED header from the client,
// as a v1-only server would send, so it pays the v1 body with X-PAYMENT.
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    client: { type: "string" },
    family: { type: "string" },
    url: { type: "string" },
    method: { type: "string", default: "GET" },
    header: { type: "string", multiple: true, default: [] },
    body: { type: "string" },
    version: { type: "string", default: "2" },
    rpc: { type: "string" },
    key: { type: "string" },
    max: { type: "string", default: "1000000" },
  },
  strict: true,
});

function need(name) {
  if (!opts[name]) throw new Error(`--${name} is required`);
  return opts[name];
}

// fetch-v2 sees a v1-only server: the PAYMENT-REQUIRED header removed from 402s.
function v1Only(inner) {
  return async (input, init) => {
    const resp = await inner(input, init);
    if (resp.status !== 402) return resp;
    const headers = new Headers(resp.headers);
    headers.delete("PAYMENT-REQUIRED");
    const body = await resp.arrayBuffer();
    return new Response(body, { status: resp.status, statusText: resp.statusText, headers });
  };
}

async function fetchV2(family, key, rpc, version, max) {
  const { wrapFetchWithPayment, x402Client } = await import("@x402/fetch");
  const client = new x402Client();
  // Our test tokens are no default asset the SDK knows: allow any asset, and cap what one
  // payment may cost with a policy instead (v2 names it `amount`, v1 `maxAmountRequired`).
  client.setSpendControls({ allowedAssets: true });
  client.registerPolicy((_v, reqs) =>
    reqs.filter((r) => BigInt(r.amount ?? r.maxAmountRequired ?? "0") <= BigInt(max)),
  );
  if (family === "evm") {
    const { privateKeyToAccount } = await import("viem/accounts");
    const { ExactEvmScheme } = await import("@x402/evm/exact/client");
    const { ExactEvmSchemeV1 } = await import("@x402/evm/exact/v1/client");
    const account = privateKeyToAccount(key);
    const options = rpc ? { rpcUrl: rpc } : undefined;
    client.register("eip155:*", new ExactEvmScheme(account, options));
    client.registerV1("base", new ExactEvmSchemeV1(account));
  } else {
    const kit = await import("@solana/kit");
    const { ExactSvmScheme } = await import("@x402/svm/exact/client");
    const { ExactSvmSchemeV1 } = await import("@x402/svm/exact/v1/client");
    const bytes = kit.getBase58Encoder().encode(key);
    const signer = await kit.createKeyPairSignerFromBytes(bytes);
    const config = rpc ? { rpcUrl: rpc } : undefined;
    client.register("solana:*", new ExactSvmScheme(signer, config));
    client.registerV1("solana-devnet", new ExactSvmSchemeV1(signer, config));
  }
  const inner = version === "1" ? v1Only(globalThis.fetch) : globalThis.fetch;
  return wrapFetchWithPayment(inner, client);
}

async function x402Fetch(family, key, rpc, max) {
  const { wrapFetchWithPayment } = await import("x402-fetch");
  let signer;
  if (family === "evm") {
    const { createWalletClient, http, publicActions } = await import("viem");
    const { base } = await import("viem/chains");
    const { privateKeyToAccount } = await import("viem/accounts");
    signer = createWalletClient({
      account: privateKeyToAccount(key),
      chain: base,
      transport: http(rpc),
    }).extend(publicActions);
  } else {
    const { createSigner } = await import("x402/types");
    signer = await createSigner("solana-devnet", key);
  }
  const config = rpc && family === "svm" ? { svmConfig: { rpcUrl: rpc } } : undefined;
  return wrapFetchWithPayment(globalThis.fetch, signer, BigInt(max), undefined, config);
}

function decodeHeader(value) {
  if (!value) return null;
  try {
    return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
  } catch {
    return { undecodable: value };
  }
}

async function main() {
  const client = need("client");
  const family = need("family");
  const url = need("url");
  const key = need("key");
  if (!["evm", "svm"].includes(family)) throw new Error(`unknown --family ${family}`);
  let pay;
  if (client === "fetch-v2") pay = await fetchV2(family, key, opts.rpc, opts.version, opts.max);
  else if (client === "x402-fetch") pay = await x402Fetch(family, key, opts.rpc, opts.max);
  else throw new Error(`unknown --client ${client}`);
  const headers = new Headers();
  for (const line of opts.header) {
    const at = line.indexOf(":");
    if (at <= 0) throw new Error(`--header must be "Name: value", not ${line}`);
    headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
  }
  const init = { method: opts.method, headers };
  if (opts.body !== undefined) init.body = opts.body;
  const resp = await pay(url, init);
  const got = Object.fromEntries(resp.headers.entries());
  const body = await resp.text();
  let json = null;
  try {
    json = JSON.parse(body);
  } catch {
    json = null;
  }
  const settle = got["payment-response"] ?? got["x-payment-response"];
  const out = { status: resp.status, headers: got, paymentResponse: decodeHeader(settle), body, json };
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  const detail = err?.cause ? `${err.message} (${err.cause?.message ?? err.cause})` : err?.message;
  process.stdout.write(JSON.stringify({ error: String(detail ?? err) }) + "\n");
  process.exit(2);
});
