// Runs after `prisma generate` (npm run generate). The generated client loads its query compiler
// from a JavaScript module that holds the wasm as one base64 string literal (2.5 MB). An ES module
// stays loaded for the life of the process, so its source and that literal, about 5 MiB of V8
// heap, were kept in every API and worker process for nothing; with the old-generation limit at
// twice the live heap (scripts/run-app.sh) that was up to 10 MiB of RSS. This writes the same
// wasm, decoded from the same installed @prisma/client, next to the generated client (src and
// dist, as the client runs from either) and makes the client read it from there.
//
// It patches generated code, so it checks exactly what it replaces and stops the build when
// Prisma's template changed, rather than leaving a client that fails at its first query.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PROVIDER = 'postgresql';
const WASM_FILE = 'query-compiler.wasm';
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const classFile = path.join(packageRoot, 'src/db/generated/internal/class.ts');
const base64Module = `@prisma/client/runtime/query_compiler_bg.${PROVIDER}.wasm-base64.mjs`;

function fail(message) {
  console.error(`prisma-compiler-wasm: ${message}`);
  process.exit(1);
}

function decodeWasm() {
  const file = createRequire(path.join(packageRoot, 'package.json')).resolve(base64Module);
  const source = fs.readFileSync(file, 'utf8');
  const m = /^const wasm = "([A-Za-z0-9+/=]+)";\s*export \{ wasm \}\s*$/.exec(source);
  if (!m) fail(`${file} is not the base64 module this script knows`);
  const bytes = Buffer.from(m[1], 'base64');
  if (!WebAssembly.validate(bytes)) fail(`${file} does not decode to valid wasm`);
  return bytes;
}

/** Replaces `from` by `to` in `text`, demanding exactly one occurrence. */
function replaceOnce(text, from, to) {
  const at = text.indexOf(from);
  if (at < 0 || text.indexOf(from, at + 1) >= 0) {
    fail(`expected exactly one ${JSON.stringify(from.slice(0, 60))}… in ${classFile}`);
  }
  return text.slice(0, at) + to + text.slice(at + from.length);
}

const LOADER_FROM = `  getQueryCompilerWasmModule: async () => {
    const { wasm } = await import("${base64Module}")
    return await decodeBase64AsWasm(wasm)
  }`;
const LOADER_TO = `  // Patched by packages/core/scripts/prisma-compiler-wasm.mjs: read from a file, so that no
  // module keeps the base64 text in the heap.
  getQueryCompilerWasmModule: async () => {
    const { readFile } = await import('node:fs/promises')
    return await WebAssembly.compile(await readFile(new URL('../${WASM_FILE}', import.meta.url)))
  }`;
const DECODER = `async function decodeBase64AsWasm(wasmBase64: string): Promise<WebAssembly.Module> {
  const { Buffer } = await import('node:buffer')
  const wasmArray = Buffer.from(wasmBase64, 'base64')
  return new WebAssembly.Module(wasmArray)
}
`;

const wasm = decodeWasm();
let text = fs.readFileSync(classFile, 'utf8');
if (!text.includes(LOADER_TO)) {
  text = replaceOnce(text, LOADER_FROM, LOADER_TO);
  text = replaceOnce(text, DECODER, '');
  fs.writeFileSync(classFile, text);
}
for (const dir of ['src', 'dist']) {
  const target = path.join(packageRoot, dir, 'db/generated', WASM_FILE);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, wasm);
}
