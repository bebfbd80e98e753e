// Compile every infra/contracts/*.sol with solcjs (the npm package `solc`, no native
// compiler download) and write one artifact per contract to infra/contracts/build/:
// {contractName, sourceName, compiler, abi, bytecode}. Usage: node infra/contracts/build.js
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const HERE = __dirname;
const OUT = path.join(HERE, "build");
const SETTINGS = { evmVersion: "cancun", optimizer: { enabled: true, runs: 200 } };
const OUTPUTS = { "*": { "*": ["abi", "evm.bytecode.object"] } };

function main() {
  const names = fs.readdirSync(HERE).filter((n) => n.endsWith(".sol")).sort();
  const sources = {};
  for (const name of names) {
    sources[name] = { content: fs.readFileSync(path.join(HERE, name), "utf8") };
  }
  const input = { language: "Solidity", sources, settings: { ...SETTINGS, outputSelection: OUTPUTS } };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) {
    console.error(e.formattedMessage);
  }
  if (errors.length > 0) {
    process.exit(1);
  }
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT);
  for (const sourceName of names) {
    for (const [contractName, c] of Object.entries(output.contracts[sourceName])) {
      const artifact = {
        contractName,
        sourceName,
        compiler: { version: solc.version(), settings: SETTINGS },
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
      };
      const file = path.join(OUT, contractName + ".json");
      fs.writeFileSync(file, JSON.stringify(artifact, null, 2) + "\n");
      console.log(path.relative(process.cwd(), file));
    }
  }
}

main();
