// A real Node.js client of the bulk door: @elastic/elasticsearch's helpers.bulk and client.bulk.
// Run as `node es_node.mjs URL INDEX TOKEN`; prints one JSON line like es_python.py.
import { Client } from '@elastic/elasticsearch'

const [url, index, token] = process.argv.slice(2)
const client = new Client({ node: url, auth: { apiKey: token }, requestTimeout: 30000 })
const info = await client.info()
const operations = []
for (let n = 0; n < 5; n++) {
  operations.push({ create: { _index: index, _id: `doc-${n}` } })
  operations.push({ '@timestamp': '2026-11-30T10:00:00Z', host: { name: 'web-1' }, n })
}
for (let n = 0; n < 5; n++) {
  operations.push({ index: { _index: index } })
  operations.push({ '@timestamp': 1796032800000 + n, service: { name: 'api' }, n })
}
const sends = []
for (let i = 0; i < 2; i++) {
  const response = await client.bulk({ operations })
  sends.push(response.items.map((item) => {
    const [action, answer] = Object.entries(item)[0]
    return [action, answer.status, answer.result ?? answer.error.type]
  }))
}
// helpers.bulk: the same documents once more, counted by the helper itself.
const stats = await client.helpers.bulk({
  datasource: Array.from({ length: 5 }, (_, n) => ({ '@timestamp': 1796032800000 + n, service: { name: 'api' }, n })),
  onDocument: () => ({ index: { _index: index } }),
  onDrop: () => {},
})
console.log(JSON.stringify({ version: info.version.number, sends, helper: { total: stats.total, successful: stats.successful, failed: stats.failed } }))
