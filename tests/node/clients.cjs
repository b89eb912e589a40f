// Real Node.js clients of the OTLP and Loki doors, run by tests/test_node_shippers.py:
//   node clients.cjs otlp-http|otlp-proto URL SERVICE   the OpenTelemetry JS SDK's exporters
//   node clients.cjs winston-loki-proto|winston-loki-json URL JOB
// Each sends every batch twice, as a retry after a lost answer would, and prints one JSON line
// with what the client saw; exit 1 when a send failed.
'use strict'

const [mode, url, name] = process.argv.slice(2)

function twice (exporter, results, pending) {
  // The SDK's exporter, asked twice for the same records; ``pending`` holds each export's end.
  return {
    export (records, done) {
      pending.push(new Promise((resolve) => {
        exporter.export(records, (first) => {
          results.push(first.code)
          exporter.export(records, (second) => {
            results.push(second.code)
            done(second)
            resolve()
          })
        })
      }))
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush()
  }
}

async function otlp (encoding) {
  const { LoggerProvider, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs')
  const { resourceFromAttributes } = require('@opentelemetry/resources')
  const { OTLPLogExporter } = require(`@opentelemetry/exporter-logs-otlp-${encoding}`)
  const results = []
  const pending = []
  const exporter = twice(new OTLPLogExporter({ url: `${url}/v1/logs` }), results, pending)
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({ 'service.name': name, 'host.name': 'node-host' }),
    processors: [new SimpleLogRecordProcessor({ exporter })]
  })
  const logger = provider.getLogger('tests.node')
  logger.emit({ severityNumber: 9, severityText: 'INFO', body: 'first', attributes: { user: 'u1' } })
  logger.emit({ severityNumber: 13, severityText: 'WARN', body: 'with an id', attributes: { 'log.record.uid': `uid-${name}` } })
  logger.emit({ severityNumber: 9, severityText: 'INFO', body: { structured: true, n: 3 } })
  await provider.forceFlush()
  await Promise.all(pending)
  await provider.shutdown()
  console.log(JSON.stringify({ results }))
  process.exit(results.every((code) => code === 0) && results.length === 6 ? 0 : 1)
}

async function winstonLoki (json) {
  const winston = require('winston')
  const LokiTransport = require('winston-loki')
  const errors = []
  const transport = new LokiTransport({
    host: url,
    json,
    labels: { job: name, host: 'node-host' },
    replaceTimestamp: false,
    interval: 0.05, // seconds between batches
    onConnectionError: (err) => errors.push(String(err))
  })
  const logger = winston.createLogger({ transports: [transport] })
  const at = '2026-11-30T10:00:00.123Z'
  for (let round = 0; round < 2; round++) { // the same entries twice: a resend
    logger.info({ message: 'first', timestamp: at })
    logger.warn({ message: 'second', timestamp: at, labels: { extra: 'x' } })
    await new Promise((resolve) => setImmediate(resolve))
    await transport.flush()
  }
  await transport.close()
  // winston-loki falls back to JSON when its snappy binding does not load: say what was sent.
  console.log(JSON.stringify({ errors, contentType: transport.batcher.contentType }))
  process.exit(errors.length === 0 ? 0 : 1)
}

async function winstonLokiRetry () {
  // Pushes while the server refuses (the test has filled its disk): winston-loki keeps the
  // refused batch and sends it again. Says "refused" once a push failed, then waits for a line
  // on stdin (space is back) and closes the transport, which sends what it kept.
  const winston = require('winston')
  const LokiTransport = require('winston-loki')
  const errors = []
  let refused
  const firstRefusal = new Promise((resolve) => { refused = resolve })
  const transport = new LokiTransport({
    host: url,
    labels: { job: name, host: 'node-host' },
    replaceTimestamp: false,
    interval: 0.05,
    onConnectionError: (err) => { errors.push(String(err)); refused() }
  })
  const logger = winston.createLogger({ transports: [transport] })
  for (let i = 0; i < 20; i++) {
    logger.info({ message: `kept ${i} ` + 'y'.repeat(20000), timestamp: '2026-11-30T10:00:00.123Z' })
  }
  await firstRefusal
  console.log('refused')
  await new Promise((resolve) => process.stdin.once('data', resolve))
  await transport.close()
  console.log(JSON.stringify({ refusals: errors.length }))
  process.exit(0)
}

const modes = {
  'winston-loki-retry': () => winstonLokiRetry(),
  'otlp-http': () => otlp('http'),
  'otlp-proto': () => otlp('proto'),
  'winston-loki-proto': () => winstonLoki(false),
  'winston-loki-json': () => winstonLoki(true)
}
if (!modes[mode]) {
  console.error(`unknown mode ${mode}; one of ${Object.keys(modes).join(', ')}`)
  process.exit(2)
}
modes[mode]().catch((err) => { console.error(err); process.exit(1) })
