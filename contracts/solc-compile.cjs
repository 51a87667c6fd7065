// Reads a solc standard-JSON input on stdin, compiles it with the pinned npm `solc`
// (the official compiler build; no download at run time) and writes the output JSON.
// All sources are inlined by ledger/compiler.py, so no import callback is needed.
const solc = require("solc");
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  if (process.argv.includes("--version")) { process.stdout.write(solc.version()); return; }
  process.stdout.write(solc.compile(input));
});
