// `node definitions.mjs PACKAGE_DIR`: the suite's test definitions as JSON, the set its
// CLI runs (tests/index.mjs plus surrogate-control): suite, id, name, kind, depends_on,
// browser_only.
import { pathToFileURL } from 'url'
import path from 'path'

const root = process.argv[2]
const load = async rel => (await import(pathToFileURL(path.join(root, rel)).href)).default
const suites = [...await load('tests/index.mjs'), await load('tests/surrogate-control.mjs')]
const out = []
for (const suite of suites) {
  for (const test of suite.tests) {
    out.push({
      suite: suite.id,
      id: test.id,
      name: test.name,
      kind: test.kind || 'required',
      depends_on: test.depends_on || [],
      browser_only: test.browser_only === true
    })
  }
}
console.log(JSON.stringify(out))
