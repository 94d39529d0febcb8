#!/usr/bin/env node
// Compiles every contracts/*.sol with the pinned solc-js from package.json and
// writes contracts/build/<Name>.json ({abi, bytecode}). The output is committed
// so tests need no compiler; CI re-runs this and fails if the output changed.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = path.join(__dirname, "..", "contracts");
const outDir = path.join(root, "build");
const sources = {};
for (const file of fs.readdirSync(root).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(root, file), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
fs.mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    const artifact = { contractName: name, source: file, compiler: solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
    fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
    console.log(`wrote contracts/build/${name}.json`);
  }
}
