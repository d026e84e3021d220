// Check Flux with InfluxData's own parser and type checker: the Rust Flux compiler that
// @influxdata/flux-lsp-browser ships as WebAssembly (MIT). No InfluxDB 2 runs here, so this and the
// recorded answers of tests/faultserver.py are all that stands between a template and production.
//
//   node tests/flux/parse.mjs FILE...   check each file ("-": stdin); print FILE:LINE:COL: message
//                                        per error, exit 1 if there is any
//   node tests/flux/parse.mjs --json    stdin: a JSON array of Flux sources; stdout: a JSON array with,
//                                        per source, {"errors": [{kind, line, column, message}], "ast"}
//
// Errors are of two kinds: "syntax" (the parser's errors, attached to AST nodes) and, for a source
// without those, "semantic" (the language server's diagnostics: undefined identifiers, wrong argument
// types of stdlib functions).
// `npm ci` in this directory installs the pinned package (tests/test_flux.py does it when missing).
//
// The package's glue, flux-lsp-browser_bg.js, begins with `import * as wasm from "./..._bg.wasm"`: a
// bundler's import that Node does not load. So the .wasm is instantiated here, with imports that call
// into the glue, and the glue is evaluated with that instance's exports in place of its import.
import { readFileSync } from 'node:fs';

const PACKAGE = new URL('./node_modules/@influxdata/flux-lsp-browser/', import.meta.url);
const WASM_IMPORT = "import * as wasm from './flux-lsp-browser_bg.wasm';";
const EXPORTS_KEY = 'tsbatch.flux-lsp-browser.wasm';

// The language server logs its start ("INFO ... language server initialized") with console.info, which
// would land in the JSON on stdout; warnings and errors still go to stderr.
console.log = console.info = console.debug = () => {};

async function loadFlux() {
    const glueSource = readFileSync(new URL('flux-lsp-browser_bg.js', PACKAGE), 'utf8');
    if (glueSource.split(WASM_IMPORT).length !== 2) {
        throw new Error(`flux-lsp-browser_bg.js: expected exactly one line ${WASM_IMPORT}`);
    }
    const module = new WebAssembly.Module(readFileSync(new URL('flux-lsp-browser_bg.wasm', PACKAGE)));
    let glue = null;
    const imports = {};
    for (const { module: from, name } of WebAssembly.Module.imports(module)) {
        // The wasm calls its imports only when one of its exports runs, after the glue is loaded.
        (imports[from] ??= {})[name] = (...args) => glue[name](...args);
    }
    globalThis[Symbol.for(EXPORTS_KEY)] = new WebAssembly.Instance(module, imports).exports;
    const source = glueSource.replace(WASM_IMPORT, `const wasm = globalThis[Symbol.for('${EXPORTS_KEY}')];`);
    glue = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
    return glue;
}

function syntaxErrors(node, found = []) {
    if (Array.isArray(node)) {
        for (const item of node) syntaxErrors(item, found);
    } else if (node !== null && typeof node === 'object') {
        for (const error of node.errors ?? []) {
            const start = node.location?.start ?? { line: 0, column: 0 };
            found.push({ kind: 'syntax', line: start.line, column: start.column, message: error.msg });
        }
        for (const [key, value] of Object.entries(node)) {
            if (key !== 'errors' && key !== 'location') syntaxErrors(value, found);
        }
    }
    return found;
}

// The language server publishes a document's diagnostics (an empty list when it is clean) while it
// handles textDocument/didOpen; the wait below is only a guard.
class Checker {
    constructor(glue) {
        this.glue = glue;
        this.lsp = new glue.Lsp();
        this.published = new Map();
        this.nextId = 1;
        this.lsp.onMessage((text) => {
            const message = JSON.parse(text);
            if (message.method === 'textDocument/publishDiagnostics') {
                this.published.set(message.params.uri, message.params.diagnostics);
            }
        });
        this.running = this.lsp.run();
    }

    async send(message) {
        return this.lsp.send(JSON.stringify({ jsonrpc: '2.0', ...message }));
    }

    async start() {
        await this.send({ id: this.nextId++, method: 'initialize', params: { capabilities: {} } });
        await this.send({ method: 'initialized', params: {} });
    }

    async diagnostics(source, index) {
        const uri = `file:///tsbatch/check-${index}.flux`;
        const textDocument = { uri, languageId: 'flux', version: 1, text: source };
        await this.send({ method: 'textDocument/didOpen', params: { textDocument } });
        for (let waited = 0; !this.published.has(uri); waited += 10) {
            if (waited > 5000) throw new Error(`no diagnostics for ${uri} within 5 s`);
            await new Promise((resolve) => setTimeout(resolve, 10));
        }
        await this.send({ method: 'textDocument/didClose', params: { textDocument: { uri } } });
        return this.published.get(uri).map((d) => ({
            kind: 'semantic',
            line: d.range.start.line + 1,
            column: d.range.start.character + 1,
            message: d.message,
            // 1 error, 2 warning, 3 information, 4 hint (style): all of them fail a check.
            severity: d.severity,
        }));
    }

    async check(source, index) {
        const ast = this.glue.parse(source);
        // A syntax error also comes back as diagnostics, with the type errors it causes: noise.
        const errors = syntaxErrors(ast);
        const diagnostics = await this.diagnostics(source, index);
        if (errors.length === 0) errors.push(...diagnostics);
        if (errors.length === 0 && !this.glue.is_valid_flux(source)) {
            errors.push({ kind: 'semantic', line: 0, column: 0, message: 'is_valid_flux() is false' });
        }
        return { errors, ast };
    }
}

async function main(args) {
    const checker = new Checker(await loadFlux());
    await checker.start();
    if (args.length === 1 && args[0] === '--json') {
        const sources = JSON.parse(readFileSync(0, 'utf8'));
        const results = [];
        for (const [index, source] of sources.entries()) results.push(await checker.check(source, index));
        // Written in full before process.exit() below: a pipe takes 64 KiB at a time.
        await new Promise((resolve) => process.stdout.write(JSON.stringify(results), resolve));
        return 0;
    }
    if (args.length === 0 || args.some((a) => a.startsWith('--'))) {
        process.stderr.write('usage: node tests/flux/parse.mjs FILE... | --json < sources.json\n');
        return 2;
    }
    let failed = 0;
    for (const [index, name] of args.entries()) {
        const { errors } = await checker.check(readFileSync(name === '-' ? 0 : name, 'utf8'), index);
        for (const e of errors) process.stdout.write(`${name}:${e.line}:${e.column}: ${e.kind}: ${e.message}\n`);
        failed += errors.length > 0;
    }
    return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
// The language server's run() never resolves; nothing else keeps the process alive.
process.exit();
